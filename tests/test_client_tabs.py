"""realtime.js in real Chromium: one stream per browser, shared by its tabs.

Pages of one Playwright ``BrowserContext`` are tabs of one browser (they share
Web Locks and BroadcastChannel); a second context is another device.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests import factories
from tests.browser import (
    browser_fixture,  # noqa: F401 (the "browser" fixture)
    eventually,
    requires_browser,
    start_service,
)
from tests.clientpage import (
    PAGE_PATH,
    events,
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


async def test_one_stream_per_browser_and_leader_takeover(
        browser: Browser, database_dsn: str, db: Any) -> None:
    owner = await factories.user(db)
    wishlist = await factories.wishlist(db, owner)
    svc = await start_service(settings_for(database_dsn, SSE_KEEPALIVE_INTERVAL="1"),
                              {PAGE_PATH: page_html()})
    try:
        laptop = await browser.new_context()
        tabs = [await laptop.new_page() for _ in range(3)]
        for tab in tabs:
            await start_tab(tab, svc, owner)
        for tab in tabs:
            await wait_state(tab, "open")
        assert [await is_leader(tab) for tab in tabs].count(True) == 1
        assert svc.service.hub.streams_of(owner) == 1  # three tabs, one stream

        phone = await browser.new_context()  # another device: a stream of its own
        phone_tab = await phone.new_page()
        await start_tab(phone_tab, svc, owner)
        await wait_state(phone_tab, "open")
        assert svc.service.hub.streams_of(owner) == 2

        # Edits through the database reach every tab of both devices, once each.
        committed = [await factories.item(db, wishlist, f"Item {i}") for i in range(3)]
        everyone = [*tabs, phone_tab]
        for tab in everyone:
            await wait_log(tab, "the three items", lambda log: len(item_ids(log)) >= 3)
        for tab in everyone:
            log = await wait_log(tab, "its record", lambda _log: True)
            assert item_ids(log) == committed
            assert resyncs(log) == ["initial"]
            ids = [e["id"] for e in events(log)]
            assert all(ids) and len(set(ids)) == len(ids)

        # The leader tab closes while events are being committed.
        leaders = [await is_leader(tab) for tab in tabs]
        leader = tabs[leaders.index(True)]
        survivors = [tab for tab in tabs if tab is not leader]

        async def commit_many() -> list[str]:
            made = []
            for i in range(12):
                made.append(await factories.item(db, wishlist, f"Busy {i}"))
                await asyncio.sleep(0.05)
            return made

        writer = asyncio.create_task(commit_many())
        await asyncio.sleep(0.2)
        closed_at = time.monotonic()
        await leader.close()

        async def someone_leads() -> bool:
            return any([await is_leader(tab) for tab in survivors])

        await eventually("a new leader", someone_leads, timeout=5)
        took_over = time.monotonic() - closed_at
        assert took_over < 2.0, f"takeover took {took_over:.2f} s"
        committed += await writer
        sentinel = await factories.item(db, wishlist, "Sentinel")
        committed.append(sentinel)
        for tab in [*survivors, phone_tab]:
            log = await wait_log(tab, "the sentinel", lambda log: sentinel in item_ids(log))
            assert item_ids(log) == committed  # every event once, in order
            assert resyncs(log) == ["initial"]  # resumed exactly: no pull-everything
        await eventually("one stream per device again",
                         lambda: svc.service.hub.streams_of(owner) == 2)
        assert svc.service.stats.resets.total() == 0
    finally:
        await svc.stop()


async def test_an_evicted_browser_stays_closed_when_the_leader_tab_goes(
        browser: Browser, database_dsn: str, db: Any) -> None:
    user, control = await factories.user(db), await factories.user(db)
    control_list = await factories.wishlist(db, control)
    svc = await start_service(settings_for(database_dsn, SSE_KEEPALIVE_INTERVAL="1"),
                              {PAGE_PATH: page_html()})
    devices: list[SSEClient] = []
    try:
        laptop = await browser.new_context()
        tabs = [await laptop.new_page() for _ in range(2)]
        for tab in tabs:
            await start_tab(tab, svc, user)
        for tab in tabs:
            await wait_state(tab, "open")
        # Ten other devices: the browser's stream is the oldest, the 11th evicts it.
        for _ in range(svc.service.settings.max_streams_per_user):
            devices.append(await SSEClient.open(svc.port, token=token(user)))
        for tab in tabs:
            await wait_state(tab, "closed")
        opens = svc.recorder.stream_opens(user)

        leader = tabs[[await is_leader(tab) for tab in tabs].index(True)]
        follower = tabs[1 - tabs.index(leader)]
        await leader.close()
        await eventually("the follower to take the lock", lambda: is_leader(follower))
        watched = await (await browser.new_context()).new_page()
        await start_tab(watched, svc, control)
        await wait_state(watched, "open")
        await asyncio.sleep(2.0)  # a reconnect would come at once; give it time anyway
        # A barrier: the browser and the service have handled everything sent so far.
        sentinel = await factories.item(db, control_list, "Sentinel")
        await wait_log(watched, "the sentinel", lambda log: sentinel in item_ids(log))
        assert svc.recorder.stream_opens(user) == opens  # no other device evicted
        assert await follower.evaluate("window.client.state") == "closed"
        assert svc.service.stats.streams_closed["too_many_streams"] == 1

        # Only when told to does it come back (and evict the oldest device in turn).
        await follower.evaluate("window.client.reconnectNow()")
        await wait_state(follower, "open")
        assert svc.recorder.stream_opens(user) == opens + 1
    finally:
        for device in devices:
            with contextlib.suppress(OSError):
                await device.close()
        await svc.stop()
