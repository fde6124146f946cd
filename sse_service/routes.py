"""The small JSON endpoints: the caller's status, liveness and readiness."""

from __future__ import annotations

from aiohttp import web

from sse_service.state import SERVICE
from sse_service.stream import stream


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


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/events/stream", stream, allow_head=False)
    app.router.add_get("/api/v1/events/status", status, allow_head=False)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if app[SERVICE].settings.metrics_enabled:
        from sse_service import metrics  # prometheus_client only when it is used

        metrics.setup(app)
