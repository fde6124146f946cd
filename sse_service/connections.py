"""Each client connection before it becomes a request: time, size and errors.

aiohttp has no header timeout, and its answer to a request it cannot parse
is plain text that quotes the request. :class:`BoundedRequestHandler` is
aiohttp's protocol with three changes, made for every connection by
:func:`protocol_factory` (``sites.serving`` passes it to each listening
socket):

- the first request's headers must be complete within ``SSE_HEADER_TIMEOUT``
  of connecting; after each response the connection may idle, or send its
  next request, for ``SSE_KEEPALIVE_TIMEOUT``. Both are aiohttp's keep-alive
  timer, which closes a connection still waiting for a complete request;
- a request head (request line and headers, plus anything sent after them
  before the next request is parsed) is bounded to :data:`MAX_REQUEST_HEAD`
  bytes, beyond aiohttp's per-line and per-header limits;
- an unparsable request gets the service's JSON error, which quotes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from sse_service import errors, logs
from sse_service.settings import Settings

MAX_LINE_SIZE = 8190  # request line, URL included (a ?token= fits)
MAX_FIELD_SIZE = 8190  # one header, name and value
MAX_HEADERS = 64  # a browser behind nginx sends about 25
MAX_REQUEST_HEAD = 32 * 1024  # nginx's default large_client_header_buffers: 4 x 8k

# Sent as is when a connection exceeds MAX_REQUEST_HEAD: aiohttp has not
# finished parsing, so there is no request object to answer through.
_TOO_LARGE_BODY = b'{"error": "request_too_large", "message": "request head too large"}'
TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
             b"Content-Type: application/json\r\nServer: " + errors.SERVER.encode() +
             b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(_TOO_LARGE_BODY)
             + _TOO_LARGE_BODY)


class BoundedRequestHandler(RequestHandler):
    """aiohttp's HTTP/1.1 protocol with a header deadline, a head size cap and JSON errors."""

    __slots__ = ("_head_bytes", "_header_timeout")

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_bytes = 0
        self._header_timeout = header_timeout

    def connection_made(self, transport: Any) -> None:
        # aiohttp starts its keep-alive timer here; the first request gets the
        # header timeout instead. Set before the timer is made, not by replacing
        # it: a cancelled timer stays in the loop's heap until it is due, which
        # costs every open stream its memory for that long.
        keepalive = self._keepalive_timeout
        self._keepalive_timeout = min(self._header_timeout, keepalive)
        try:
            super().connection_made(transport)
        finally:
            self._keepalive_timeout = keepalive

    def data_received(self, data: bytes) -> None:
        self._head_bytes += len(data)
        if self._head_bytes > MAX_REQUEST_HEAD and self.transport is not None:
            # Mid-response (a stream, say) there is no room for an answer.
            if not self._request_in_progress and not self._messages:
                self.transport.write(TOO_LARGE)
            self.force_close()
            return
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:
            self._head_bytes = 0  # a complete request: the next head starts afresh

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """The JSON error for a request aiohttp could not parse or handle.

        aiohttp's own answer is ``text/plain`` with the parser's message, which
        quotes up to 100 bytes of the request (a token, say); this one names the
        status only. The exception is logged as aiohttp logs it (the formatter
        keeps only its class: :class:`sse_service.logs.JournalFormatter`).
        """
        super().handle_error(request, status, exc, message)  # logs; raises if too late
        code, text = errors.status_text(status)
        response = errors.json_error(status, code, text, {"Server": errors.SERVER})
        response.force_close()
        return response


def protocol_factory(server: web.Server, settings: Settings) -> Callable[[], RequestHandler]:
    """A protocol factory for ``loop.create_server``: one bounded handler per connection.

    ``server`` is the runner's :class:`aiohttp.web.Server` (the application's
    request handling, and the connections its shutdown closes). The runner's
    own handler arguments are not used: the limits and the access logger come
    from here, so that every listening socket of the service applies them.
    """
    kwargs: dict[str, Any] = {
        "loop": asyncio.get_running_loop(),
        "header_timeout": settings.header_timeout,
        "keepalive_timeout": settings.keepalive_timeout,
        "max_line_size": MAX_LINE_SIZE,
        "max_field_size": MAX_FIELD_SIZE,
        "max_headers": MAX_HEADERS,
        "access_log_class": logs.AccessLogger,
        "access_log": logging.getLogger("aiohttp.access"),
    }

    def make() -> RequestHandler:
        return BoundedRequestHandler(server, **kwargs)

    return make
