"""``GET /api/v1/events/stream``: one user's Server-Sent Events stream.

The handler authenticates, takes a place under the caps, sends the response
headers through aiohttp-sse's :class:`EventSourceResponse`, and registers a
:class:`Subscriber` with the hub, which from then on writes to it directly.
The handler itself only waits for the stream to end (client gone, token
expired, evicted, too slow, shutdown) and unregisters in ``finally``.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion11
from aiohttp_sse import EventSourceResponse

from sse_service.errors import ServiceError, error_response
from sse_service.state import SERVICE, Service
from sse_service.subscriber import Subscriber

STREAM_PATH = "/api/v1/events/stream"


class _HubStreamResponse(EventSourceResponse):
    """aiohttp-sse's response without its per-stream ping task.

    The hub sends ``sync:ping`` to all streams at once (one encoding for all),
    so the library's own ``: ping`` loop is not needed; skipping it saves a
    task, a coroutine and a timer per idle stream (measured: ~450 bytes of
    RSS each). The stream's lifetime is the subscriber's ``done`` future.
    """

    async def _ping(self) -> None:  # aiohttp-sse 3.x's ping loop (pinned <4)
        return

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if request.version < HttpVersion11:
            # HTTP/1.0 has no chunked framing: only a closed connection ends the
            # body. aiohttp would keep a "keep-alive" request's connection open
            # after the handler (and aiohttp-sse promises keep-alive), so the
            # client would wait forever after auth:expired or sync:closed.
            self.force_close()
            self.headers["Connection"] = "close"
        writer = await super().prepare(request)
        # prepare() has started _ping() above as a task, which ends at once; do
        # not keep the finished Task for the stream's lifetime (~350 bytes).
        self._ping_task = None
        return writer


async def stream(request: web.Request) -> web.StreamResponse:
    """The handler: open the stream, then wait, for hours, until it ends.

    Kept small on purpose: this coroutine's frame lives as long as the stream,
    so the set-up and its locals are in :func:`_open`.
    """
    try:
        response, sub = await _open(request)
    except (ServiceError, web.HTTPException) as exc:
        return error_response(exc)
    if sub is not None:
        hub = request.app[SERVICE].hub
        try:
            # An empty value means none (as a browser that saw no id would send).
            hub.attach(sub, request.headers.get("Last-Event-ID")
                       or request.query.get("lastEventId"))
            await sub.done
        finally:
            sub.close("disconnected")  # no-op if closed already
            hub.detach(sub)
    return response


async def _open(request: web.Request) -> tuple[web.StreamResponse, Subscriber | None]:
    """Authenticate, check the caps, send the headers: the response and its subscriber
    (None when the client left while we answered)."""
    service: Service = request.app[SERVICE]
    settings = service.settings
    principal = service.verifier.authenticate(request, settings.token_cookie)
    service.hub.check_capacity()
    response = _HubStreamResponse(send_timeout=settings.send_timeout)
    writer = await response.prepare(request)
    transport = request.transport
    if transport is None or writer is None:
        return response, None
    sub = Subscriber(
        principal.user_id, transport,
        chunked=bool(getattr(writer, "chunked", False)),
        max_buffer=settings.stream_buffer_bytes,
        expires_at=principal.expires_at,  # the hub ends the stream then
    )
    return response, sub
