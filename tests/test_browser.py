"""A real browser's ``EventSource`` against the real service.

Headless Chromium (the Debian ``chromium`` package, driven by Playwright)
loads a small page and the page's own ``EventSource`` does everything a
user's browser would: it sends the token as ``?token=``, reconnects by itself
after the ``retry:`` the server asked for and sends its own ``Last-Event-ID``.

The page is served from the service's own origin (a test-only route added to
the service application before it starts, see :mod:`tests.browser`) because
the service sends no CORS headers: a cross-origin ``EventSource`` would be
refused by the browser.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from sse_service.settings import Settings
from sse_service.wire import encode
from tests import factories
from tests.browser import (
    PageService,
    browser_fixture,  # noqa: F401 (the ``browser`` fixture)
    eventually,
    requires_browser,
    start_service,
)
from tests.harness import settings_for, token

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = [pytest.mark.slow, requires_browser]

PAGE_PATH = "/test-page"
EVENT_NAMES = ("message", "items:updated", "items:resolved", "wishlists:updated",
               "marks:updated", "sync:reset", "sync:ping", "sync:closed", "auth:expired")
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>0</title></head>
<body><pre id="log"></pre>
<script>
const log = document.getElementById("log");
let count = 0;
function add(entry) {
  log.textContent += JSON.stringify(entry) + "\\n";
  document.title = String(++count);
}
const source = new EventSource("/api/v1/events/stream?token=" + encodeURIComponent(TOKEN));
for (const name of NAMES) {
  source.addEventListener(name, (e) => add({type: e.type, data: e.data, id: e.lastEventId}));
}
source.onopen = () => add({type: "open"});
source.onerror = () => add({type: "error", readyState: source.readyState});
</script></body></html>
"""

Entry = dict[str, Any]


def page_html(access_token: str) -> str:
    return (PAGE.replace("TOKEN", json.dumps(access_token))
                .replace("NAMES", json.dumps(list(EVENT_NAMES))))


async def start_with_page(settings: Settings, html: str, port: int = 0,
                          previous: PageService | None = None) -> PageService:
    """The real app plus the test page, accepting only once LISTEN is up."""
    return await start_service(settings, {PAGE_PATH: html}, port=port,
                               recorder=previous.recorder if previous else None)


async def page_entries(page: Page) -> list[Entry]:
    text = await page.evaluate(
        "(document.getElementById('log') || {textContent: ''}).textContent")
    return [json.loads(line) for line in (text or "").splitlines() if line]


async def wait_for(page: Page, what: str, predicate: Callable[[list[Entry]], bool],
                   timeout: float = 10.0) -> list[Entry]:
    """The page's entries once ``predicate`` holds for them."""
    async def check() -> list[Entry] | None:
        got = await page_entries(page)
        return got if predicate(got) else None

    try:
        result: list[Entry] = await eventually(what, check, timeout)
    except AssertionError:
        raise AssertionError(f"the page never showed {what}; it shows "
                             f"{await page_entries(page)}") from None
    return result


# -- the test ---------------------------------------------------------------------


def of_type(entries: list[Entry], kind: str) -> list[Entry]:
    return [e for e in entries if e["type"] == kind]


def item_events(entries: list[Entry]) -> dict[str, Entry]:
    """items:updated entries by item id."""
    return {json.loads(e["data"])["id"]: e for e in of_type(entries, "items:updated")}


async def test_browser_eventsource_live_resume_and_restart(
        browser: Browser, database_dsn: str, db: Any) -> None:
    owner = await factories.user(db)
    wishlist = await factories.wishlist(db, owner)
    # Short shutdown retry (jittered to 150..450 ms) keeps the test quick.
    settings = settings_for(database_dsn, SSE_SHUTDOWN_RETRY_MS="300")
    html = page_html(token(owner))
    svc = await start_with_page(settings, html)
    try:
        page = await browser.new_page()
        await page.goto(svc.url(PAGE_PATH))
        await wait_for(page, "the stream opening", lambda es: len(of_type(es, "open")) == 1)
        await svc.wait_streams(1)

        # (a) A database change reaches the page live, with the trigger's id.
        first = await factories.item(db, wishlist, "Kettle")
        entries = await wait_for(page, "the new item", lambda es: first in item_events(es))
        first_id = item_events(entries)[first]["id"]
        assert first_id.isdigit()  # sse.event_id: ids every instance agrees on

        # (b) The stream is cut (as a proxy would); a change happens while the
        # browser waits to reconnect; its own Last-Event-ID gets it replayed.
        replayed_before = svc.service.stats.replayed_events
        svc.service.hub.close_all("test_cut", final=lambda: encode(retry=1500))
        await svc.wait_streams(0)
        received = svc.service.stats.notifications_received
        second = await factories.item(db, wishlist, "Teapot")
        async with asyncio.timeout(5):
            while svc.service.stats.notifications_received == received:
                await asyncio.sleep(0.01)
        assert svc.service.hub.count == 0  # so it cannot have been delivered live
        entries = await wait_for(page, "the missed item, replayed",
                                 lambda es: second in item_events(es))
        assert len(of_type(entries, "open")) == 2
        assert svc.service.stats.replayed_events == replayed_before + 1
        assert of_type(entries, "sync:reset") == []
        await svc.wait_streams(1)

        # (c) The service restarts on the same port. A change made while it is
        # down is lost to LISTEN; the reconnecting browser is told to resync.
        port = svc.port
        await svc.stop()  # on_shutdown: a short jittered retry, then a clean end
        lost = await factories.item(db, wishlist, "Toaster")
        svc = await start_with_page(settings, html, port, svc)
        entries = await wait_for(page, "a sync:reset after the restart",
                                 lambda es: bool(of_type(es, "sync:reset")))
        reset = of_type(entries, "sync:reset")[0]
        # Only a request carrying a Last-Event-ID unknown here gets this reason.
        assert json.loads(reset["data"]) == {"reason": "unknown_last_event_id"}
        assert reset["id"]  # a fresh resume point from the new process
        assert lost not in item_events(entries)  # the gap is signalled, not filled
        await svc.wait_streams(1)

        # (d) Live delivery works again after the restart.
        fourth = await factories.item(db, wishlist, "Mug")
        entries = await wait_for(page, "an item after the restart",
                                 lambda es: fourth in item_events(es))
        assert len(of_type(entries, "open")) == 3
        # EventSource never gave up (readyState 2 = CLOSED): every error was a reconnect.
        assert all(e["readyState"] != 2 for e in of_type(entries, "error"))
        order = [json.loads(e["data"])["id"] for e in of_type(entries, "items:updated")]
        assert order == [first, second, fourth]
    finally:
        await svc.stop()

