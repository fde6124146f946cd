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
from sse_service.service import SERVICE, Service
from sse_service.subscriber import Subscriber

STREAM_PATH = "/api/v1/events/stream"


class _HubStreamResponse(EventSourceResponse):
    """aiohttp-sse's response without its per-stream ping task.

    The hub sends ``sync:ping`` to all streams at once (one encoding for all),
    so the library's own ``: ping`` loop is not needed; skipping it saves a
    task, a coroutine and a timer per idle stream (docs/performance.md). The
    stream's lifetime is the subscriber's ``done`` future.
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
        # not keep the finished Task for the stream's lifetime.
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
    """Authenticate, reserve a place under the cap, send the headers: the response and
    its subscriber, which :meth:`Hub.attach` turns into a stream (None, with the place
    given back, when the client left while we answered)."""
    service: Service = request.app[SERVICE]
    settings = service.settings
    principal = service.verifier.authenticate(request, settings.token_cookie)
    service.hub.reserve()  # before the first await: concurrent opens must not overshoot
    response = _HubStreamResponse(send_timeout=settings.send_timeout)
    try:
        writer = await response.prepare(request)
    except BaseException:  # the client left, or a cancellation: give the place back
        service.hub.release()
        raise
    transport = request.transport
    if transport is None or writer is None:
        service.hub.release()
        return response, None
    sub = Subscriber(
        principal.user_id, transport,
        chunked=bool(getattr(writer, "chunked", False)),
        max_buffer=settings.stream_buffer_bytes,
        # The token is accepted until exp + leeway: end the stream then, not at exp
        # (where a client would reconnect, be accepted again, and loop).
        expires_at=principal.expires_at + settings.jwt_leeway,
    )
    return response, sub
