"""realtime.js in real Chromium behind the shipped nginx site, while the service is down.

nginx then answers the stream itself with a 200 ``text/event-stream`` holding only
a comment and ``retry:`` (``location @sse_unavailable``). That is not a live stream:
the client must count it as a failed attempt, reach ``degraded`` (the app polls) and
keep its one ``initial`` resync for the service's real first stream.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from sse_service import assets
from sse_service.bench.nginxsite import NGINX
from tests import factories
from tests.browser import (
    TOKEN_PATH,
    browser_fixture,  # noqa: F401 (the "browser" fixture)
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
from tests.test_nginx import free_port, nginx

if TYPE_CHECKING:
    from playwright.async_api import Browser, Route

pytestmark = [
    pytest.mark.slow,
    requires_browser,
    pytest.mark.skipif(not NGINX.exists(),
                       reason="nginx is not installed (.ci/run installs Debian's nginx)"),
]


async def test_unavailable_answer_is_not_open(browser: Browser, database_dsn: str, db: Any,
                                              tmp_path: Path) -> None:
    owner = await factories.user(db)
    wishlist = await factories.wishlist(db, owner)
    port = free_port()  # the service's, unused until it starts
    async with nginx(tmp_path, port, None) as proxy:
        page = await (await browser.new_context()).new_page()
        # With the service down the page, the module and the token come from the test
        # (on nginx's origin); only the stream goes through nginx.
        page_text = page_html()

        async def fulfil(route: Route) -> None:
            path = route.request.url.removeprefix(proxy.base).partition("?")[0]
            if path == PAGE_PATH:
                await route.fulfill(body=page_text, content_type="text/html")
            elif path == TOKEN_PATH:
                await route.fulfill(body=token(owner), content_type="text/plain")
            else:
                name = path.removeprefix(assets.CLIENT_PREFIX)
                await route.fulfill(body=(assets.WEB_DIR / name).read_bytes(),
                                    content_type="text/javascript")

        for pattern in (PAGE_PATH, TOKEN_PATH + "*", assets.CLIENT_PREFIX + "*.js"):
            await page.route(proxy.base + pattern, fulfil)

        class Origin:  # start_tab needs only url()
            def url(self, path: str) -> str:
                return proxy.base + path

        await start_tab(page, Origin(), owner,  # type: ignore[arg-type]
                        backoffBaseMs=100, backoffMaxMs=1000, degradeAfterFailures=2,
                        pollIntervalMs=500)
        await wait_state(page, "degraded", timeout=20)
        await wait_log(page, "polling resyncs",
                       lambda log: resyncs(log).count("degraded") >= 2, timeout=15)
        log = await log_of(page)
        assert "open" not in states(log)
        assert "initial" not in resyncs(log)
        unavailable = [line for line in proxy.access_log.read_text().splitlines()
                       if " 200 " in line and "/502 " in line]
        assert len(unavailable) >= 2  # what the client saw was nginx's own answer

        svc = await start_service(settings_for(database_dsn, SSE_KEEPALIVE_INTERVAL="1"),
                                  port=port)
        try:
            await wait_state(page, "open", timeout=20)
            await asyncio.sleep(1.0)  # two poll intervals: polling must have stopped
            item = await factories.item(db, wishlist, "Kettle")
            log = await wait_log(page, "the item", lambda log: item in item_ids(log))
            opened = next(i for i, e in enumerate(log)
                          if e["kind"] == "state" and e["state"] == "open")
            # The initial resync comes with the open (just before it is reported), and
            # then nothing more: one pull, and polling stopped.
            assert resyncs(log[:opened])[-1] == "initial"
            assert resyncs(log).count("initial") == 1
            assert resyncs(log[opened:]) == []
            assert states(log).count("open") == 1
            assert svc.recorder.stream_opens(owner) == 1
        finally:
            await svc.stop()
