"""The service's exceptions, and the one place that turns them into responses."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from http import HTTPStatus

from aiohttp import web

log = logging.getLogger("sse_service.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The Server header of every response: aiohttp's default names its own and
# Python's versions, which only helps someone matching known vulnerabilities.
SERVER = "sse-service"


class ServiceError(Exception):
    """An error with a public meaning: it becomes a JSON error response."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})


class AuthError(ServiceError):
    """No usable credentials: 401 with a ``WWW-Authenticate`` challenge."""

    status = 401
    code = "invalid_token"

    def __init__(self, message: str, *, missing: bool = False) -> None:
        challenge = 'Bearer realm="sse-service"'
        if not missing:  # RFC 6750 §3.1: no error code when no token was sent
            challenge += ', error="invalid_token"'
        super().__init__(message, {"WWW-Authenticate": challenge})
        if missing:
            self.code = "missing_token"


class BadRequest(ServiceError):
    status = 400
    code = "bad_request"


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class TooManyRequests(ServiceError):
    """Over a rate limit: 429 with ``Retry-After``."""

    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, {"Retry-After": str(retry_after)})


class OverCapacity(ServiceError):
    """The process holds as many streams as it may: 503 with ``Retry-After``."""

    status = 503
    code = "over_capacity"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, {"Retry-After": str(retry_after)})


def status_text(status: int) -> tuple[str, str]:
    """The error code and message of a bare HTTP status: ``(bad_request, Bad Request)``."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return phrase.lower().replace(" ", "_").replace("-", "_"), phrase


def json_error(status: int, code: str, message: str,
               headers: Mapping[str, str] | None = None) -> web.Response:
    body = json.dumps({"error": code, "message": message})
    return web.Response(status=status, text=body, content_type="application/json",
                        headers=headers)


def error_response(exc: ServiceError | web.HTTPException) -> web.Response:
    """The JSON response for ``exc``: the one place errors become responses.

    aiohttp's own HTTP errors (4xx/5xx) keep their status and, where they have
    one, their ``Allow`` or ``Retry-After`` header. An aiohttp exception that
    is not an error (a redirect) is raised again, for aiohttp to answer.
    """
    if isinstance(exc, ServiceError):
        return json_error(exc.status, exc.code, exc.message, exc.headers)
    if exc.status < 400:
        raise exc
    headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
    code, _ = status_text(exc.status)
    return json_error(exc.status, code, exc.reason, headers)


def json_errors(handler: Handler) -> Handler:
    """``handler`` with :class:`ServiceError` and HTTP errors answered as JSON.

    A per-route wrapper rather than an application middleware: any middleware
    makes aiohttp keep two more coroutine frames alive for as long as a
    request runs, on every open event stream (docs/performance.md), and the stream
    route, which runs for hours, handles its few errors itself through
    :func:`error_response`.
    """

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except (ServiceError, web.HTTPException) as exc:
            return error_response(exc)

    return guarded


async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Every routed response (an ``on_response_prepare`` signal, not a middleware).

    It sets the :data:`SERVER` header, and turns an error response that is not
    JSON (an ``HTTPException`` that aiohttp's router raised itself, say) into
    the documented ``{"error", "message"}`` body, keeping status and headers.
    """
    response.headers["Server"] = SERVER
    if (response.status >= 400 and isinstance(response, web.Response)
            and response.content_type != "application/json"):
        code, message = status_text(response.status)
        response.text = json.dumps({"error": code, "message": message})
        response.content_type = "application/json"


async def not_found(request: web.Request) -> web.StreamResponse:
    """The catch-all route: 404 as JSON."""
    return error_response(web.HTTPNotFound())


def method_not_allowed(allowed: Iterable[str]) -> Handler:
    """A route's answer to every method it does not serve: 405 with ``Allow``."""
    methods = sorted(set(allowed))

    async def refuse(request: web.Request) -> web.StreamResponse:
        return error_response(web.HTTPMethodNotAllowed(request.method, methods))

    return refuse
