"""realtime.js in real Chromium: cookie mode, a browser without Web Locks, and the
back/forward-cache handover (pagehide gives the stream up, pageshow asks again)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from sse_service.wire import encode
from tests import factories
from tests.browser import (
    browser_fixture,  # noqa: F401 (the "browser" fixture)
    eventually,
    requires_browser,
    start_service,
)
from tests.clientpage import (
    PAGE_PATH,
    is_leader,
    item_ids,
    page_html,
    resyncs,
    start_tab,
    wait_log,
    wait_state,
)
from tests.harness import settings_for, token
from tests.sseclient import SSEClient

if TYPE_CHECKING:
    from playwright.async_api import Browser

pytestmark = [pytest.mark.slow, requires_browser]

PAGES = {PAGE_PATH: page_html()}


async def test_cookie_mode(browser: Browser, database_dsn: str, db: Any) -> None:
    owner, stranger = await factories.user(db), await factories.user(db)
    wishlist = await factories.wishlist(db, owner)
    svc = await start_service(settings_for(database_dsn), PAGES)
    try:
        context = await browser.new_context()
        await context.add_cookies([{"name": "access_token", "value": token(owner),
                                    "url": svc.url("/")}])
        page = await context.new_page()
        await start_tab(page, svc, owner, cookieMode=True)
        await wait_state(page, "open")
        item = await factories.item(db, wishlist, "Kettle")
        await wait_log(page, "the item", lambda log: item in item_ids(log))
        assert svc.recorder.token_calls[owner] == 0

        # Without a cookie there is nothing to refresh: unauthorized at once.
        bare = await (await browser.new_context()).new_page()
        await start_tab(bare, svc, stranger, cookieMode=True)
        await wait_state(bare, "unauthorized")
        assert svc.recorder.token_calls[stranger] == 0
    finally:
        await svc.stop()


async def test_without_web_locks_each_tab_has_its_own_stream(
        browser: Browser, database_dsn: str, db: Any) -> None:
    owner = await factories.user(db)
    wishlist = await factories.wishlist(db, owner)
    svc = await start_service(settings_for(database_dsn), PAGES)
    try:
        context = await browser.new_context()
        await context.add_init_script("delete Navigator.prototype.locks;")
        tabs = [await context.new_page() for _ in range(2)]
        for tab in tabs:
            await start_tab(tab, svc, owner)
        for tab in tabs:
            await wait_state(tab, "open")
            assert await is_leader(tab)
        assert svc.service.hub.streams_of(owner) == 2
        item = await factories.item(db, wishlist, "Kettle")
        for tab in tabs:
            log = await wait_log(tab, "the item", lambda log: item in item_ids(log))
            assert item_ids(log) == [item]  # its own stream's copy only
    finally:
        await svc.stop()


PAGEHIDE = "window.dispatchEvent(new PageTransitionEvent('pagehide', {persisted: true}))"
PAGESHOW = "window.dispatchEvent(new PageTransitionEvent('pageshow', {persisted: true}))"


async def test_pagehide_hands_the_stream_over(
        browser: Browser, database_dsn: str, db: Any) -> None:
    owner = await factories.user(db)
    wishlist = await factories.wishlist(db, owner)
    svc = await start_service(settings_for(database_dsn, SSE_KEEPALIVE_INTERVAL="1"), PAGES)
    try:
        context = await browser.new_context()
        first, second = await context.new_page(), await context.new_page()
        await start_tab(first, svc, owner)
        await wait_state(first, "open")
        await start_tab(second, svc, owner)
        await wait_state(second, "open")
        assert await is_leader(first) and not await is_leader(second)

        # Into the back/forward cache: the lock and the stream are given up.
        await first.evaluate(PAGEHIDE)
        await eventually("the other tab to lead", lambda: is_leader(second))
        assert not await is_leader(first)
        # Back from the cache: it asks again, and follows the new leader. What was
        # relayed meanwhile never reached it (BroadcastChannel drops messages to a
        # cached page): it is told to pull.
        await first.evaluate(PAGESHOW)
        item = await factories.item(db, wishlist, "Kettle")
        for tab, pulls in ((first, ["initial", "restored"]), (second, ["initial"])):
            log = await wait_log(tab, "the item", lambda log: item in item_ids(log))
            assert item_ids(log) == [item]
            assert resyncs(log) == pulls
        await eventually("one stream", lambda: svc.service.hub.streams_of(owner) == 1)
        assert not await is_leader(first)
    finally:
        await svc.stop()


VISIBLE = "document.dispatchEvent(new Event('visibilitychange'))"


async def test_becoming_visible_reconnects_a_waiting_client(
        browser: Browser, database_dsn: str, db: Any) -> None:
    owner = await factories.user(db)
    wishlist = await factories.wishlist(db, owner)
    svc = await start_service(settings_for(database_dsn, SSE_KEEPALIVE_INTERVAL="1"), PAGES)
    try:
        page = await (await browser.new_context()).new_page()
        await start_tab(page, svc, owner)
        await wait_state(page, "open")
        # The server ends the stream asking for a minute's pause: the client waits...
        svc.service.hub.close_all("test_cut", final=lambda: encode(retry=60_000))
        await wait_state(page, "backoff")
        missed = await factories.item(db, wishlist, "While waiting")
        # ...until the page becomes visible (a tab brought to the front), then at once.
        await page.evaluate(VISIBLE)
        log = await wait_log(page, "the missed item", lambda log: missed in item_ids(log),
                             timeout=5)
        assert resyncs(log) == ["initial"]
        assert svc.recorder.stream_opens(owner) == 2
    finally:
        await svc.stop()


async def test_a_visible_follower_hurries_the_leader(
        browser: Browser, database_dsn: str, db: Any) -> None:
    owner = await factories.user(db)
    wishlist = await factories.wishlist(db, owner)
    svc = await start_service(settings_for(database_dsn, SSE_KEEPALIVE_INTERVAL="1"), PAGES)
    try:
        context = await browser.new_context()
        leader, follower = await context.new_page(), await context.new_page()
        await start_tab(leader, svc, owner)
        await wait_state(leader, "open")
        await start_tab(follower, svc, owner)
        await wait_state(follower, "open")
        assert await is_leader(leader) and not await is_leader(follower)
        # The leader (a background tab, say) waits a minute before coming back...
        svc.service.hub.close_all("test_cut", final=lambda: encode(retry=60_000))
        await wait_state(follower, "backoff")
        missed = await factories.item(db, wishlist, "While waiting")
        # ...until the follower's tab comes to the front: it asks the leader to hurry.
        await follower.evaluate(VISIBLE)
        log = await wait_log(follower, "the missed item", lambda log: missed in item_ids(log),
                             timeout=5)
        assert resyncs(log) == ["initial"]
        assert svc.recorder.stream_opens(owner) == 2
    finally:
        await svc.stop()


async def test_becoming_visible_or_online_respects_retry_after(
        browser: Browser, database_dsn: str, db: Any) -> None:
    owner, other = await factories.user(db), await factories.user(db)
    # One stream per process: while another holds it, the service answers 503 with a
    # Retry-After of several seconds.
    svc = await start_service(settings_for(database_dsn, SSE_KEEPALIVE_INTERVAL="1",
                                           SSE_MAX_STREAMS="1"), PAGES)
    blocker = await SSEClient.open(svc.port, token=token(other))
    try:
        await svc.wait_streams(1)
        context = await browser.new_context()
        page = await context.new_page()
        await start_tab(page, svc, owner, backoffBaseMs=100, backoffMaxMs=60_000)
        await wait_state(page, "backoff")
        assert [a.status for a in svc.recorder.of(owner)] == [503]
        # Becoming visible would reconnect at once (state "connecting" right away, as
        # connect() reports it synchronously); within Retry-After it must not.
        assert await page.evaluate(f"{VISIBLE}; window.client.state") == "backoff"
        await context.set_offline(True)
        await wait_state(page, "offline")
        await context.set_offline(False)
        await wait_state(page, "backoff")
        assert [a.status for a in svc.recorder.of(owner)] == [503]
        # Told to, it comes back at once.
        await blocker.close()
        await svc.wait_streams(0)
        await page.evaluate("window.client.reconnectNow()")
        await wait_state(page, "open")
    finally:
        await blocker.close()
        await svc.stop()
