"""useRealtimeSync with the real Vue 3 runtime in real Chromium.

Vue's browser ESM build comes from the npm registry, installed by ``.ci/run``
into ``tests/.node`` (``npm install --no-save --prefix tests/.node vue@3``);
without it these tests skip. The page maps the bare ``vue`` import with an
import map, as a page without a build step does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from tests import factories
from tests.browser import (
    TOKEN_PATH,
    browser_fixture,  # noqa: F401 (the "browser" fixture)
    eventually,
    requires_browser,
    start_service,
)
from tests.clientpage import PAGE_PATH, item_ids, page_html, start_tab, wait_log, wait_state
from tests.harness import settings_for

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

VUE = (Path(__file__).resolve().parent / ".node" / "node_modules" / "vue" / "dist"
       / "vue.esm-browser.prod.js")
pytestmark = [
    pytest.mark.slow, requires_browser,
    pytest.mark.skipif(not VUE.is_file(), reason=f"needs Vue's browser build at {VUE}: "
                       "npm install --no-save --prefix tests/.node vue@3 (.ci/run does)"),
]

VUE_PATH = "/test/vue.esm-browser.js"
VUE_PAGE = "/test/vue.html"
QUIET_SECONDS = 10.0
HTML = """<!doctype html>
<html><head><meta charset="utf-8">
<script type="importmap">{"imports": {"vue": "VUE_PATH"}}</script></head>
<body><div id="app"></div>
<script type="module">
import { createApp, h, shallowRef } from "vue";
import { useRealtimeSync } from "/api/v1/events/client/vue.js";
window.items = [];
window.resyncs = [];
window.start = (user, options) => {
  const Status = {
    setup() {
      const sync = useRealtimeSync({
        url: "/api/v1/events/stream",
        getToken: async () => (await fetch("TOKEN_PATH?user=" + user)).text(),
        ...options,
      });
      sync.client.on("items:updated", (data) => window.items.push(data.id));
      sync.client.onResync((reason) => window.resyncs.push(reason));
      window.sync = sync;
      return () => h("p", { id: "status" }, [
        sync.state.value, String(sync.isConnected.value), String(sync.reconnectAttempts.value),
        sync.lastEventTime.value === null ? "never" : "seen"].join("|"));
    },
  };
  const shown = shallowRef(true);
  window.hide = () => { shown.value = false; };
  createApp({ render: () => (shown.value ? h(Status) : h("p", { id: "status" }, "unmounted")) })
    .mount("#app");
};
window.ready = true;
</script></body></html>
""".replace("VUE_PATH", VUE_PATH).replace("TOKEN_PATH", TOKEN_PATH)


def serve_vue(app: web.Application) -> None:
    async def vue(_request: web.Request) -> web.Response:
        return web.Response(body=VUE.read_bytes(), content_type="text/javascript")

    app.router.add_get(VUE_PATH, vue)


async def status(page: Page) -> str:
    text: str = await page.inner_text("#status")
    return text


async def test_use_realtime_sync_in_vue(browser: Browser, database_dsn: str, db: Any) -> None:
    owner, control = await factories.user(db), await factories.user(db)
    wishlist, control_list = (await factories.wishlist(db, owner),
                              await factories.wishlist(db, control))
    settings = settings_for(database_dsn, SSE_KEEPALIVE_INTERVAL="1",
                            SSE_SHUTDOWN_RETRY_MS="200")
    pages = {VUE_PAGE: HTML, PAGE_PATH: page_html()}
    svc = await start_service(settings, pages, extra=serve_vue)
    recorder, port = svc.recorder, svc.port
    try:
        page = await (await browser.new_context()).new_page()
        await page.goto(svc.url(VUE_PAGE))
        await page.wait_for_function("window.ready === true")
        await page.evaluate("(user) => window.start(user, {keepaliveMs: 1000, backoffBaseMs: 300,"
                            " backoffMaxMs: 600, degradeAfterFailures: 100})", owner)
        await eventually("open", lambda: _startswith(page, "open|true|0|"))
        item = await factories.item(db, wishlist, "Kettle")
        await eventually("the item", lambda: page.evaluate(f"window.items.includes('{item}')"))
        assert (await status(page)).endswith("|seen")
        assert await page.evaluate("window.resyncs") == ["initial"]

        # Read-only: a write through the returned refs changes nothing.
        await page.evaluate("window.sync.state.value = 'closed';"
                            " window.sync.reconnectAttempts.value = 99")
        assert await page.evaluate("window.sync.state.value") == "open"
        assert await page.evaluate("window.sync.reconnectAttempts.value") == 0

        # The service goes away: not connected, attempts counted; back: open, 0 again.
        await svc.stop()
        await eventually("failed attempts", lambda: _matches(page, r"^backoff\|false\|[1-9]"))
        svc = await start_service(settings, pages, port=port, recorder=recorder,
                                  extra=serve_vue)
        await eventually("open again", lambda: _startswith(page, "open|true|0|"))

        # Unmounting ends the client: the stream ends, and nothing follows.
        await page.evaluate("window.hide()")
        await eventually("the stream to end", lambda: svc.service.hub.streams_of(owner) == 0)
        assert await status(page) == "unmounted"
        assert await page.evaluate("window.sync.client.state") == "closed"
        before = recorder.count(owner)
        watched = await (await browser.new_context()).new_page()
        await start_tab(watched, svc, control)
        await wait_state(watched, "open")
        await asyncio.sleep(QUIET_SECONDS)
        sentinel = await factories.item(db, control_list, "Sentinel")  # a barrier
        await wait_log(watched, "the sentinel", lambda log: sentinel in item_ids(log))
        assert recorder.count(owner) == before
    finally:
        await svc.stop()


async def _startswith(page: Page, prefix: str) -> bool:
    return (await status(page)).startswith(prefix)


async def _matches(page: Page, pattern: str) -> bool:
    import re

    return re.match(pattern, await status(page)) is not None
