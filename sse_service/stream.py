"""``GET /api/v1/events/stream``: one user's Server-Sent Events stream.

The handler authenticates, takes a place under the caps, sends the response
headers through aiohttp-sse's :class:`EventSourceResponse`, and registers a
:class:`Subscriber` with the hub, which from then on writes to it directly.
The handler itself only waits for the stream to end (client gone, token
expired, evicted, too slow, shutdown) and unregisters in ``finally``.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from sse_service.events import dumps, encode
from sse_service.state import SERVICE, Service
from sse_service.subscriber import Subscriber

# aiohttp-sse's own ping is replaced by the hub's ``sync:ping`` (one encoding for
# all streams), and its ping task is stopped right after the headers are sent:
# one task less per idle stream.
_NO_PING = 24 * 3600.0


async def stream(request: web.Request) -> web.StreamResponse:
    service: Service = request.app[SERVICE]
    settings = service.settings
    principal = service.verifier.authenticate(request, settings.token_cookie)
    hub = service.hub
    hub.check_capacity()
    last_event_id = request.headers.get("Last-Event-ID")
    if last_event_id is None:
        last_event_id = request.query.get("lastEventId")

    response = EventSourceResponse(ping_interval=_NO_PING, send_timeout=settings.send_timeout)
    writer = await response.prepare(request)
    response.stop_streaming()
    transport = request.transport
    if transport is None or writer is None:  # the client left while we answered
        return response

    sub = Subscriber(
        principal.user_id, transport,
        chunked=bool(getattr(writer, "chunked", False)),
        max_buffer=settings.stream_buffer_bytes,
    )
    hub.attach(sub, last_event_id)
    loop = asyncio.get_running_loop()
    sub.expiry = loop.call_later(
        max(0.0, principal.expires_at - time.time()), _expire, sub
    )
    try:
        await sub.done
    finally:
        if not sub.closed:
            sub.close("disconnected")
        hub.detach(sub)
    return response


_EXPIRED = encode(name="auth:expired", data=dumps({"reason": "token_expired"}))


def _expire(sub: Subscriber) -> None:
    sub.expiry = None
    sub.close("token_expired", final=_EXPIRED)
