"""The small JSON endpoints: the caller's status, liveness and readiness."""

from __future__ import annotations

from aiohttp import web

from sse_service import assets
from sse_service.errors import Handler, json_errors, method_not_allowed, not_found
from sse_service.service import SERVICE
from sse_service.stream import STREAM_PATH, stream


async def status(request: web.Request) -> web.Response:
    """``{"connected", "total_connections", "user_connections"}`` for the caller."""
    service = request.app[SERVICE]
    principal = service.verifier.authenticate(request, service.settings.token_cookie)
    mine = service.hub.streams_of(principal.user_id)
    return web.json_response({
        "connected": mine > 0,
        "total_connections": service.hub.count,
        "user_connections": mine,
    })


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. Also says whether LISTEN is up."""
    service = request.app[SERVICE]
    return web.json_response({
        "status": "ok",
        "listen": service.listener.state.as_dict(),
        "streams": service.hub.count,
        "inbox": service.dispatcher.backlog,
    })


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 only while the LISTEN connection is up, else 503."""
    service = request.app[SERVICE]
    listen = service.listener.state
    return web.json_response({"ready": listen.connected, "listen": listen.as_dict()},
                             status=200 if listen.connected else 503)


def add_get(app: web.Application, path: str, handler: Handler, *, head: bool = True) -> None:
    """``GET path`` (and ``HEAD`` with ``head``); any other method gets a JSON 405."""
    app.router.add_get(path, handler, allow_head=head)
    app.router.add_route("*", path, method_not_allowed(["GET", "HEAD"] if head else ["GET"]))


def setup(app: web.Application) -> None:
    """Every route. The stream answers its own errors (see :func:`json_errors` for
    why); the others are wrapped; unknown paths get a JSON 404."""
    add_get(app, STREAM_PATH, stream, head=False)
    add_get(app, "/api/v1/events/status", json_errors(status), head=False)
    add_get(app, "/healthz", json_errors(healthz))
    add_get(app, "/readyz", json_errors(readyz))
    if app[SERVICE].settings.metrics_enabled:
        from sse_service import metrics  # prometheus_client only when it is used

        metrics.setup(app)
        add_get(app, "/metrics", json_errors(metrics.metrics))
    assets.setup(app)
    app.router.add_route("*", "/{tail:.*}", not_found)
