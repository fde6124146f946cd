"""Shared helpers for browser tests: headless Chromium over Playwright, and the
real service with test-only pages on its own origin.

The service sends no CORS headers, so a page that opens a stream or imports
the client module must come from the service's origin: :func:`start_service`
adds the test's pages (and a token endpoint) to the real application before it
starts. Every request the service answers is recorded on the service side
(:class:`Recorder`), so a test can prove that nothing reopened.

Chromium is Debian's (``/usr/bin/chromium``); ``playwright install`` is never
run. Tests using these helpers skip when Playwright or Chromium is missing.

Usage::

    from tests.browser import browser_fixture, requires_browser  # noqa: F401
    pytestmark = [pytest.mark.slow, requires_browser]

    async def test_x(browser: Browser, database_dsn: str) -> None:
        svc = await start_service(settings_for(database_dsn), {"/test/p.html": html})
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from aiohttp import web

from sse_service import logs
from sse_service.app import create_app
from sse_service.settings import Settings
from sse_service.stream import STREAM_PATH
from tests.harness import JWT_KEY, Running, token

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

try:
    from playwright.async_api import async_playwright
except ImportError:  # pragma: no cover - the test extras install it
    async_playwright = None  # type: ignore[assignment]

CHROMIUM_PATH = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync"]
CLIENT_URL = "/api/v1/events/client/realtime.js"
TOKEN_PATH = "/test/token"

requires_browser = pytest.mark.skipif(
    async_playwright is None or not os.access(CHROMIUM_PATH, os.X_OK),
    reason="needs Playwright for Python (the test extras) and Debian's chromium "
           "(apt-get install chromium; .ci/run installs both)")


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Debian Chromium driven by Playwright's async API."""
    assert async_playwright is not None
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM_PATH, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture(name="browser")
async def browser_fixture() -> AsyncIterator[Browser]:
    """One Chromium per test; each ``new_context()`` is another device."""
    async with chromium() as browser:
        yield browser


@dataclass(frozen=True)
class Answered:
    """One response the service started: its path, status and user (from the
    bearer token, unverified, or the token endpoint's ``user``; None if neither)."""

    path: str
    status: int
    user: str | None


@dataclass
class Recorder:
    """What the service answered, kept across restarts of the test service.

    ``requests``: every response the service started, in order (a stream is
    recorded when it opens). ``token_calls``: tokens issued per user by
    ``GET /test/token?user=``; ``token_ttl`` is the lifetime of the next ones.
    The endpoint answers 500 for the users in ``token_fails``, signs the next
    ``bad_tokens[user]`` tokens with a wrong key, and waits ``token_delay`` s
    before answering.
    """

    requests: list[Answered] = field(default_factory=list)
    token_calls: Counter[str] = field(default_factory=Counter)
    token_ttl: float = 3600.0
    token_fails: set[str] = field(default_factory=set)
    bad_tokens: Counter[str] = field(default_factory=Counter)
    token_delay: float = 0.0

    def of(self, user: str, path: str = STREAM_PATH) -> list[Answered]:
        """The user's answered requests for ``path``."""
        return [a for a in self.requests if a.user == user and a.path == path]

    def stream_opens(self, user: str) -> int:
        """Streams the service opened for ``user`` (status 200 on the stream path)."""
        return sum(1 for a in self.of(user) if a.status == 200)

    def count(self, user: str) -> int:
        """Every answered request that names ``user``: streams, refusals, tokens."""
        return sum(1 for a in self.requests if a.user == user)


def _user_of(request: web.BaseRequest) -> str | None:
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credential:
        try:
            claims = jwt.decode(credential.strip(), options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return None
        sub = claims.get("sub")
        return sub if isinstance(sub, str) else None
    return request.query.get("user")


@dataclass
class PageService(Running):
    """A running service with test pages; ``url(path)`` is on its origin."""

    recorder: Recorder = field(default_factory=Recorder)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _routes(app: web.Application, pages: Mapping[str, str], recorder: Recorder) -> None:
    for path, html in pages.items():
        async def page(_request: web.Request, html: str = html) -> web.Response:
            return web.Response(text=html, content_type="text/html")

        app.router.add_get(path, page)

    async def issue(request: web.Request) -> web.Response:
        user = request.query["user"]
        recorder.token_calls[user] += 1
        if recorder.token_delay:
            await asyncio.sleep(recorder.token_delay)
        if user in recorder.token_fails:
            return web.Response(status=500, text="token endpoint failing (test)")
        key = JWT_KEY
        if recorder.bad_tokens[user] > 0:
            recorder.bad_tokens[user] -= 1
            key = "another-key-another-key-another-key-0123456789"
        return web.Response(text=token(user, ttl=recorder.token_ttl, key=key))

    app.router.add_get(TOKEN_PATH, issue)

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        recorder.requests.append(Answered(request.path, response.status, _user_of(request)))

    app.on_response_prepare.append(record)


async def start_service(settings: Settings, pages: Mapping[str, str] | None = None, *,
                        port: int = 0, recorder: Recorder | None = None,
                        extra: Callable[[web.Application], None] | None = None) -> PageService:
    """The real app plus test pages, accepting connections only once LISTEN is up.

    Pass the previous ``recorder`` and ``port`` to restart a service in place.
    ``extra`` may add further test-only routes (before the app starts).
    """
    recorder = recorder if recorder is not None else Recorder()
    app = create_app(settings)
    _routes(app, pages or {}, recorder)
    if extra is not None:
        extra(app)
    runner = web.AppRunner(app, handler_cancellation=True, access_log_class=logs.AccessLogger,
                           shutdown_timeout=settings.shutdown_timeout)
    await runner.setup()
    svc = PageService(app, runner, port, recorder)
    try:
        # Accept no stream before LISTEN is up: what a reconnecting client gets
        # then does not depend on who wins that race.
        await svc.wait_listening()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=settings.backlog)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    svc.port = runner.addresses[0][1]
    return svc


async def eventually(what: str, check: Callable[[], Any], timeout: float = 10.0,
                     interval: float = 0.05) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


async def open_page(context: BrowserContext, url: str) -> Page:
    """A new tab at ``url``; the page's console errors are raised as failures later."""
    page = await context.new_page()
    await page.goto(url)
    return page
