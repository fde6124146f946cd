"""realtime.js in real Chromium: a client that must stop does stop.

close(), an eviction (``sync:closed``: an 11th device), a token refused twice
and a failing getToken() each leave the client quiet: the service sees no
further request from it for 10 s (each case's user is counted on the service
side), with every timer of the client far shorter than that.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import pytest

from tests import factories
from tests.browser import (
    browser_fixture,  # noqa: F401 (the "browser" fixture)
    eventually,
    requires_browser,
    start_service,
)
from tests.clientpage import PAGE_PATH, item_ids, page_html, start_tab, wait_log, wait_state
from tests.harness import settings_for, token
from tests.sseclient import SSEClient

if TYPE_CHECKING:
    from playwright.async_api import Browser

pytestmark = [pytest.mark.slow, requires_browser]

QUIET_SECONDS = 10.0
# Every timer of the client is far shorter than the quiet period: a leak would show.
FAST = {"keepaliveMs": 1000, "backoffBaseMs": 100, "backoffMaxMs": 500,
        "degradeAfterFailures": 2, "pollIntervalMs": 500}


async def test_stopped_clients_stay_quiet(browser: Browser, database_dsn: str, db: Any) -> None:
    closer, evicted, refused, tokenless, control = [await factories.user(db) for _ in range(5)]
    control_list = await factories.wishlist(db, control)
    svc = await start_service(settings_for(database_dsn, SSE_KEEPALIVE_INTERVAL="1"),
                              {PAGE_PATH: page_html()})
    recorder = svc.recorder
    devices: list[SSEClient] = []
    try:
        async def tab(user: str) -> Any:
            page = await (await browser.new_context()).new_page()
            await start_tab(page, svc, user, **FAST)
            return page

        # close(): the service sees the stream end.
        closing = await tab(closer)
        await wait_state(closing, "open")
        await closing.evaluate("window.client.close()")
        await eventually("the stream to end", lambda: svc.service.hub.streams_of(closer) == 0)
        assert await closing.evaluate("window.client.state") == "closed"

        # An 11th device evicts the oldest stream, the browser's.
        oldest = await tab(evicted)
        await wait_state(oldest, "open")
        for _ in range(svc.service.settings.max_streams_per_user):
            devices.append(await SSEClient.open(svc.port, token=token(evicted)))
        await wait_state(oldest, "closed")
        assert svc.service.stats.streams_closed["too_many_streams"] == 1

        # A token refused, refreshed once, refused again: unauthorized, no loop.
        recorder.bad_tokens[refused] = 2
        refusing = await tab(refused)
        await wait_state(refusing, "unauthorized")
        assert [a.status for a in recorder.of(refused)] == [401, 401]
        assert recorder.token_calls[refused] == 2

        # getToken() fails: unauthorized without ever asking for a stream.
        recorder.token_fails.add(tokenless)
        failing = await tab(tokenless)
        await wait_state(failing, "unauthorized")
        assert recorder.of(tokenless) == []

        counts = {user: recorder.count(user) for user in (closer, evicted, refused, tokenless)}
        watched = await tab(control)
        await wait_state(watched, "open")
        await asyncio.sleep(QUIET_SECONDS)
        # A barrier: the browser and the service have handled everything sent so far.
        sentinel = await factories.item(db, control_list, "Sentinel")
        await wait_log(watched, "the sentinel", lambda log: sentinel in item_ids(log))
        assert {user: recorder.count(user) for user in counts} == counts
        assert await oldest.evaluate("window.client.state") == "closed"
        assert await refusing.evaluate("window.client.state") == "unauthorized"
        assert await failing.evaluate("window.client.state") == "unauthorized"

        # An evicted client comes back only when told to (and evicts the oldest in turn).
        opens = recorder.stream_opens(evicted)
        await oldest.evaluate("window.client.reconnectNow()")
        await wait_state(oldest, "open")
        assert recorder.stream_opens(evicted) == opens + 1
    finally:
        for device in devices:
            with contextlib.suppress(OSError):
                await device.close()
        await svc.stop()
