"""The service's exceptions, and the one place that turns them into responses."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

log = logging.getLogger("sse_service.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class OverCapacity(ServiceError):
    """The process holds as many streams as it may: 503 with ``Retry-After``."""

    status = 503
    code = "over_capacity"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, {"Retry-After": str(retry_after)})


def json_error(status: int, code: str, message: str,
               headers: Mapping[str, str] | None = None) -> web.Response:
    body = json.dumps({"error": code, "message": message})
    return web.Response(status=status, text=body, content_type="application/json",
                        headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render :class:`ServiceError` and aiohttp's HTTP errors as JSON."""
    try:
        return await handler(request)
    except ServiceError as exc:
        return json_error(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        code = exc.reason.lower().replace(" ", "_")
        return json_error(exc.status, code, exc.reason, headers)
