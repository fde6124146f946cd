"""realtime.js in real Chromium: offline/online, token expiry, a dead connection,
a service restart and a service that stays down (degraded, then back)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests import factories
from tests.browser import (
    PageService,
    browser_fixture,  # noqa: F401 (the "browser" fixture)
    eventually,
    requires_browser,
    start_service,
)
from tests.clientpage import (
    PAGE_PATH,
    item_ids,
    log_of,
    page_html,
    resyncs,
    start_tab,
    states,
    wait_log,
    wait_state,
)
from tests.harness import settings_for, token
from tests.sseclient import SSEClient

if TYPE_CHECKING:
    from playwright.async_api import Browser

pytestmark = [pytest.mark.slow, requires_browser]

PAGES = {PAGE_PATH: page_html()}


async def committed_and_seen(svc: PageService, db: Any, wishlist: str, title: str) -> str:
    """Commit an item and wait until the service has read its notification."""
    before = svc.service.stats.notifications_received
    item = await factories.item(db, wishlist, title)
    await eventually("the notification", lambda: svc.service.stats.notifications_received > before)
    return item


async def test_offline_then_online_resumes(browser: Browser, database_dsn: str, db: Any) -> None:
    owner = await factories.user(db)
    wishlist = await factories.wishlist(db, owner)
    svc = await start_service(settings_for(database_dsn, SSE_KEEPALIVE_INTERVAL="1"), PAGES)
    try:
        context = await browser.new_context()
        page = await context.new_page()
        await start_tab(page, svc, owner)
        await wait_state(page, "open")
        first = await factories.item(db, wishlist, "Before")
        await wait_log(page, "the first item", lambda log: first in item_ids(log))

        await context.set_offline(True)
        await wait_state(page, "offline")
        # set_offline does not cut an open stream by itself; a real network loss does.
        svc.service.hub.close_all("test_cut")
        await svc.wait_streams(0)
        missed = [await committed_and_seen(svc, db, wishlist, f"Offline {i}") for i in range(2)]
        assert svc.service.hub.count == 0  # so none was delivered live

        await context.set_offline(False)
        back_at = time.monotonic()
        log = await wait_log(page, "the items committed while offline",
                             lambda log: missed[-1] in item_ids(log), timeout=10)
        elapsed = time.monotonic() - back_at
        assert elapsed < 2.0, f"took {elapsed:.2f} s after online"
        assert item_ids(log) == [first, *missed]
        assert resyncs(log) == ["initial"]  # resumed exactly
        assert "offline" in states(log)
        assert svc.service.stats.replayed_events == 2
    finally:
        await svc.stop()


async def test_token_expiry_refreshes_once_and_resumes(
        browser: Browser, database_dsn: str, db: Any) -> None:
    owner = await factories.user(db)
    wishlist = await factories.wishlist(db, owner)
    svc = await start_service(settings_for(database_dsn, SSE_KEEPALIVE_INTERVAL="1"), PAGES)
    recorder = svc.recorder
    try:
        recorder.token_ttl = 3  # the first token expires while the stream is open
        page = await (await browser.new_context()).new_page()
        await start_tab(page, svc, owner)
        await wait_state(page, "open")
        assert recorder.token_calls[owner] == 1
        recorder.token_ttl = 3600
        recorder.token_delay = 1.0  # the refresh takes a while: commit during it
        first = await factories.item(db, wishlist, "Before expiry")
        await wait_log(page, "the first item", lambda log: first in item_ids(log))

        await eventually("the refresh", lambda: recorder.token_calls[owner] == 2, timeout=10)
        during = await committed_and_seen(svc, db, wishlist, "During refresh")
        log = await wait_log(page, "the item committed during the refresh",
                             lambda log: during in item_ids(log))
        recorder.token_delay = 0
        sentinel = await factories.item(db, wishlist, "After")
        log = await wait_log(page, "the sentinel", lambda log: sentinel in item_ids(log))
        assert item_ids(log) == [first, during, sentinel]
        assert recorder.token_calls[owner] == 2  # getToken once for the refresh
        assert resyncs(log) == ["initial"]
        assert svc.service.stats.streams_closed["token_expired"] == 1
        assert [a.status for a in recorder.of(owner)] == [200, 200]  # no 401 on the way
    finally:
        await svc.stop()


async def test_a_401_refreshes_the_token_once(
        browser: Browser, database_dsn: str, db: Any) -> None:
    owner = await factories.user(db)
    wishlist = await factories.wishlist(db, owner)
    svc = await start_service(settings_for(database_dsn, SSE_KEEPALIVE_INTERVAL="1"), PAGES)
    try:
        svc.recorder.bad_tokens[owner] = 1  # the first token is refused
        page = await (await browser.new_context()).new_page()
        await start_tab(page, svc, owner)
        await wait_state(page, "open")
        assert svc.recorder.token_calls[owner] == 2
        assert [a.status for a in svc.recorder.of(owner)] == [401, 200]
        item = await factories.item(db, wishlist, "Kettle")
        await wait_log(page, "the item", lambda log: item in item_ids(log))
    finally:
        await svc.stop()


async def test_refused_streams_degrade_then_recover(
        browser: Browser, database_dsn: str, db: Any) -> None:
    owner, other = await factories.user(db), await factories.user(db)
    wishlist = await factories.wishlist(db, owner)
    # One stream per process: while another holds it, the service answers 503.
    svc = await start_service(settings_for(database_dsn, SSE_KEEPALIVE_INTERVAL="1",
                                           SSE_MAX_STREAMS="1"), PAGES)
    blocker = await SSEClient.open(svc.port, token=token(other))
    try:
        await svc.wait_streams(1)
        page = await (await browser.new_context()).new_page()
        await start_tab(page, svc, owner, backoffBaseMs=100, backoffMaxMs=400,
                        degradeAfterFailures=2, pollIntervalMs=500)
        await wait_state(page, "degraded")
        await wait_log(page, "polling resyncs", lambda log: resyncs(log).count("degraded") >= 2)
        refused = svc.recorder.of(owner)
        assert refused and all(a.status == 503 for a in refused)
        await blocker.close()
        await wait_state(page, "open")  # by itself: Retry-After is capped by backoffMaxMs
        item = await factories.item(db, wishlist, "Kettle")
        log = await wait_log(page, "the item", lambda log: item in item_ids(log))
        assert resyncs(log)[0] == "degraded"  # the app pulled while the stream was refused
        assert "initial" in resyncs(log)
    finally:
        await blocker.close()
        await svc.stop()


async def test_watchdog_reconnects_a_silent_stream(
        browser: Browser, database_dsn: str, db: Any) -> None:
    owner = await factories.user(db)
    wishlist = await factories.wishlist(db, owner)
    # The service pings every 30 s; the client expects one every 0.4 s: silence.
    svc = await start_service(settings_for(database_dsn), PAGES)
    try:
        page = await (await browser.new_context()).new_page()
        await start_tab(page, svc, owner, keepaliveMs=400)
        await wait_state(page, "open")
        first = await factories.item(db, wishlist, "Kettle")
        await wait_log(page, "the item", lambda log: first in item_ids(log))
        await eventually("a reconnect by the watchdog",
                         lambda: svc.recorder.stream_opens(owner) >= 2)
        item = await factories.item(db, wishlist, "Teapot")
        log = await wait_log(page, "the next item", lambda log: item in item_ids(log))
        assert item_ids(log) == [first, item]
        assert resyncs(log) == ["initial"]  # every reopen resumed exactly
        assert svc.service.stats.resets.total() == 0
    finally:
        await svc.stop()


async def test_restart_then_down_degraded_then_back(
        browser: Browser, database_dsn: str, db: Any) -> None:
    owner = await factories.user(db)
    wishlist = await factories.wishlist(db, owner)
    # Clients come back 0.75-2.25 s after a shutdown: the restart is done by then.
    settings = settings_for(database_dsn, SSE_KEEPALIVE_INTERVAL="1",
                            SSE_SHUTDOWN_RETRY_MS="1500")
    svc = await start_service(settings, PAGES)
    recorder, port = svc.recorder, svc.port
    try:
        page = await (await browser.new_context()).new_page()
        await start_tab(page, svc, owner, backoffBaseMs=400, backoffMaxMs=1000,
                        degradeAfterFailures=6, pollIntervalMs=1000)
        await wait_state(page, "open")

        # A restart: the client comes back by itself and is told to pull once.
        await svc.stop()
        svc = await start_service(settings, PAGES, port=port, recorder=recorder)
        await wait_log(page, "a resync after the restart",
                       lambda log: resyncs(log) == ["initial", "reset"])
        await wait_state(page, "open")
        item = await factories.item(db, wishlist, "After restart")
        log = await wait_log(page, "an item after the restart", lambda log: item in item_ids(log))
        assert resyncs(log) == ["initial", "reset"]

        # Down for a while: degraded, the app is asked to pull every pollIntervalMs.
        await svc.stop()
        await wait_state(page, "degraded", timeout=15)
        down_at = time.monotonic()
        await wait_log(page, "polling resyncs",
                       lambda log: resyncs(log).count("degraded") >= 3, timeout=15)
        # Hidden, it stops polling (Playwright pages are always visible: pretend).
        await page.evaluate(HIDE)
        hidden = resyncs(await log_of(page)).count("degraded")
        await asyncio.sleep(3.0)  # three poll intervals
        assert resyncs(await log_of(page)).count("degraded") == hidden
        await page.evaluate(SHOW)  # visible again: a pull at once
        await wait_log(page, "a pull on becoming visible",
                       lambda log: resyncs(log).count("degraded") == hidden + 1, timeout=2)
        await asyncio.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - down_at)))
        svc = await start_service(settings, PAGES, port=port, recorder=recorder)
        await wait_state(page, "open", timeout=10)  # back by itself, at the backoff cap
        # The new process cannot resume: it says so, and the app pulls once more.
        log = await wait_log(page, "a resync after the restart",
                             lambda log: resyncs(log).count("reset") == 2)
        polls = resyncs(log).count("degraded")
        assert resyncs(log)[-1] == "reset"
        # Polling stopped with the stream back: after two poll intervals and a sentinel,
        # no further degraded resync.
        await asyncio.sleep(2.0)
        sentinel = await factories.item(db, wishlist, "Sentinel")
        log = await wait_log(page, "the sentinel", lambda log: sentinel in item_ids(log))
        assert resyncs(log).count("degraded") == polls
        assert svc.service.hub.streams_of(owner) == 1
    finally:
        await svc.stop()


DOWN_SECONDS = 20.0
HIDE = """Object.defineProperty(document, "visibilityState",
                      {configurable: true, get: () => "hidden"});
document.dispatchEvent(new Event("visibilitychange"));"""
SHOW = """delete document.visibilityState;
document.dispatchEvent(new Event("visibilitychange"));"""


async def test_a_get_token_that_hangs_is_a_failed_attempt(
        browser: Browser, database_dsn: str, db: Any) -> None:
    owner = await factories.user(db)
    wishlist = await factories.wishlist(db, owner)
    svc = await start_service(settings_for(database_dsn, SSE_KEEPALIVE_INTERVAL="1"), PAGES)
    recorder = svc.recorder
    try:
        # The token endpoint takes far longer than the client's watchdog (1.2 s here).
        recorder.token_delay = 8.0
        page = await (await browser.new_context()).new_page()
        await start_tab(page, svc, owner, keepaliveMs=400, backoffBaseMs=100,
                        backoffMaxMs=400, degradeAfterFailures=100)
        await wait_log(page, "a failed attempt", lambda log: "backoff" in states(log))
        await eventually("another getToken()", lambda: recorder.token_calls[owner] >= 2)
        assert recorder.of(owner) == []  # no stream was asked for without a token
        recorder.token_delay = 0
        await wait_state(page, "open", timeout=30)
        item = await factories.item(db, wishlist, "Kettle")
        log = await wait_log(page, "the item", lambda log: item in item_ids(log))
        assert resyncs(log) == ["initial"]
    finally:
        await svc.stop()
