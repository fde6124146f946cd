"""The demo's HTTP routes: its page, and small endpoints that play the core API.

:func:`setup` adds them to an application that ``sse-service demo`` built;
the production application never has them. The page shows the owner and the
viewer side by side, each through the shipped browser client. Its buttons
call the ``POST`` endpoints here, which write the core tables with plain SQL
(:mod:`sse_service.demo_data`), so that the real triggers and the real
service carry every change back to the page.

The session endpoint hands out both users' tokens to whoever asks: the demo
listens on 127.0.0.1 only and runs on a throw-away database.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from sse_service import demo_data
from sse_service.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    TooManyRequests,
    json_errors,
)
from sse_service.service import SERVICE
from sse_service.stream import STREAM_PATH

WEB = Path(__file__).resolve().parent / "web"
PAGE_PATH = "/demo"
MAX_BODY = 2048  # bytes of a JSON request body
WRITES_PER_SECOND = 10.0  # every write costs a transaction and a NOTIFY


@dataclass(frozen=True, slots=True)
class Demo:
    """What the routes need: who is who, both users' tokens, the database."""

    sample: demo_data.Sample
    tokens: dict[str, str]  # by role
    dsn: str


class WriteBudget:
    """A token bucket: ``rate`` writes a second on average, ``burst`` at once."""

    def __init__(self, rate: float = WRITES_PER_SECOND, burst: float = WRITES_PER_SECOND) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._at = time.monotonic()

    def take(self) -> None:
        """Spend one write, or raise :class:`TooManyRequests`."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            raise TooManyRequests("too many writes; try again in a second", retry_after=1)
        self._tokens -= 1


DEMO = web.AppKey("demo", Demo)
POOL = web.AppKey("demo_pool", asyncpg.Pool)
BUDGET = web.AppKey("demo_budget", WriteBudget)


def setup(app: web.Application, demo: Demo, budget: WriteBudget | None = None) -> None:
    """Add the demo's routes, its connection pool and its write budget to ``app``."""
    app[DEMO] = demo
    app[BUDGET] = budget if budget is not None else WriteBudget()
    app.cleanup_ctx.append(_pool)
    page = _static("demo.html", "text/html")
    script = _static("demo.js", "text/javascript")
    app.router.add_get(PAGE_PATH, page)
    app.router.add_get(PAGE_PATH + "/demo.js", script)
    app.router.add_get(PAGE_PATH + "/api/session", json_errors(session))
    app.router.add_get(PAGE_PATH + "/api/view", json_errors(view))
    app.router.add_post(PAGE_PATH + "/api/items", json_errors(add_item))
    app.router.add_post(PAGE_PATH + "/api/items/{item}/resolve", json_errors(resolve_item))
    app.router.add_post(PAGE_PATH + "/api/items/{item}/mark", json_errors(toggle_mark))
    app.router.add_post(PAGE_PATH + "/api/wishlist", json_errors(rename_wishlist))


async def _pool(app: web.Application) -> AsyncIterator[None]:
    pool = await asyncpg.create_pool(app[DEMO].dsn, min_size=1, max_size=3)
    app[POOL] = pool
    try:
        yield
    finally:
        await pool.close()


def _static(name: str, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    body = (WEB / name).read_bytes()  # read once: the files are small and never change

    async def handler(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers={
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'",
        })

    return handler


async def session(request: web.Request) -> web.Response:
    """Both users, their tokens, the wishlist and where the stream is."""
    demo = request.app[DEMO]
    people = {"owner": demo.sample.owner, "viewer": demo.sample.viewer}
    return web.json_response({
        "stream": STREAM_PATH,
        "wishlist_id": demo.sample.wishlist_id,
        "users": {role: {"id": p.id, "name": p.name, "token": demo.tokens[role]}
                  for role, p in people.items()},
    })


def _role(request: web.Request, *allowed: str) -> str:
    """The caller's role, from the token the service itself would accept."""
    service = request.app[SERVICE]
    principal = service.verifier.authenticate(request, service.settings.token_cookie)
    role = request.app[DEMO].sample.role(principal.user_id)
    if role is None or role not in allowed:
        raise Forbidden(f"only the {' or the '.join(allowed)} may do this")
    return role


async def view(request: web.Request) -> web.Response:
    """The wishlist as the caller may see it (the owner: no marks)."""
    role = _role(request, "owner", "viewer")
    async with request.app[POOL].acquire() as conn:
        return web.json_response(await demo_data.view(conn, request.app[DEMO].sample, role))


async def add_item(request: web.Request) -> web.Response:
    _role(request, "owner")
    title = await _text_field(request, "title", demo_data.MAX_TITLE)
    request.app[BUDGET].take()
    async with request.app[POOL].acquire() as conn:
        item = await demo_data.add_item(conn, request.app[DEMO].sample, title)
    if item is None:
        raise Conflict(f"the demo wishlist holds at most {demo_data.MAX_ITEMS} items")
    return web.json_response({"id": item}, status=201)


async def resolve_item(request: web.Request) -> web.Response:
    _role(request, "owner")
    item = _item_id(request)
    request.app[BUDGET].take()
    async with request.app[POOL].acquire() as conn:
        if not await demo_data.resolve_item(conn, request.app[DEMO].sample, item):
            raise NotFound("no such pending item in the wishlist")
    return web.json_response({"id": str(item), "status": "resolved"})


async def toggle_mark(request: web.Request) -> web.Response:
    _role(request, "viewer")
    item = _item_id(request)
    request.app[BUDGET].take()
    async with request.app[POOL].acquire() as conn:
        marked = await demo_data.toggle_mark(conn, request.app[DEMO].sample, item)
    if marked is None:
        raise NotFound("no such item in the wishlist")
    return web.json_response({"id": str(item), "marked": marked})


async def rename_wishlist(request: web.Request) -> web.Response:
    _role(request, "owner")
    name = await _text_field(request, "name", demo_data.MAX_NAME)
    request.app[BUDGET].take()
    async with request.app[POOL].acquire() as conn:
        await demo_data.rename_wishlist(conn, request.app[DEMO].sample, name)
    return web.json_response({"name": name})


def _item_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["item"])
    except ValueError:
        raise NotFound("no such item") from None


async def _text_field(request: web.Request, key: str, limit: int) -> str:
    """``key`` of a small JSON object body: a string of 1 to ``limit`` printable
    characters once trimmed."""
    length = request.content_length
    if length is None or length > MAX_BODY:
        raise BadRequest(f"send a JSON body of at most {MAX_BODY} bytes, with Content-Length")
    try:
        body: Any = json.loads(await request.read())
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    value = body.get(key) if isinstance(body, dict) else None
    if not isinstance(value, str):
        raise BadRequest(f"expected a JSON object with a string {key!r}")
    value = value.strip()
    if not 1 <= len(value) <= limit or not value.isprintable():
        raise BadRequest(f"{key!r} must be 1 to {limit} printable characters")
    return value
