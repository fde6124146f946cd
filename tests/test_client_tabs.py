"""realtime.js in real Chromium: one stream per browser, shared by its tabs."""

from __future__ import annotations

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
from tests.clientpage import PAGE_PATH, item_ids, page_html, resyncs
from tests.harness import settings_for

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = [pytest.mark.slow, requires_browser]


async def start_tab(page: Page, svc: PageService, user: str, **options: Any) -> None:
    await page.goto(svc.url(PAGE_PATH))
    await page.wait_for_function("window.ready === true")
    await page.evaluate("([user, options]) => window.startClient(user, options)",
                        [user, {"keepaliveMs": 1000, **options}])


async def log_of(page: Page) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await page.evaluate("window.rtLog")
    return result


async def test_smoke(browser: Browser, database_dsn: str, db: Any) -> None:
    owner = await factories.user(db)
    wishlist = await factories.wishlist(db, owner)
    svc = await start_service(settings_for(database_dsn, SSE_KEEPALIVE_INTERVAL="1"),
                              {PAGE_PATH: page_html()})
    try:
        context = await browser.new_context()
        page = await context.new_page()
        await start_tab(page, svc, owner)
        await eventually("one stream", lambda: svc.service.hub.streams_of(owner) == 1)
        item = await factories.item(db, wishlist, "Kettle")

        async def arrived() -> bool:
            return item in item_ids(await log_of(page))

        await eventually("the item", arrived)
        assert resyncs(await log_of(page)) == ["initial"]
    finally:
        await svc.stop()
