"""A real browser's native EventSource, behind the shipped nginx site, over a restart.

While the service is down nginx answers the stream request itself; the site turns
that 502 into a 200 event stream holding only a jittered ``retry:``, so the
page's own EventSource keeps retrying, paced, and reconnects by itself once the
service is back: no reload, no code of the page's own.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from sse_service.bench.nginxsite import NGINX
from tests.harness import settings_for, start, token
from tests.test_nginx import free_port, nginx, notify

playwright = pytest.importorskip("playwright.async_api")

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK) or not NGINX.exists(),
                       reason="needs Debian's chromium and nginx (.ci/run installs them)"),
]

PAGE = """<!doctype html><html><head><meta charset="utf-8"></head><body><script>
window.entries = [];
const source = new EventSource("/api/v1/events/stream?token=" + encodeURIComponent(TOKEN));
for (const name of ["items:updated", "sync:reset"]) {
  source.addEventListener(name, (e) => entries.push({type: e.type, data: e.data}));
}
source.onopen = () => entries.push({type: "open"});
source.onerror = () => entries.push({type: "error", readyState: source.readyState});
</script></body></html>"""


async def test_native_event_source_survives_a_restart(tmp_path: Path, database_dsn: str,
                                                      db: Any) -> None:
    user = str(uuid.uuid4())
    port = free_port()
    settings = settings_for(database_dsn)
    svc = await start(settings, port)
    async with nginx(tmp_path, port, None) as proxy, playwright.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page()
            html = PAGE.replace("TOKEN", json.dumps(token(user)))
            # The page comes from nginx's origin (same-origin EventSource), served by
            # the browser's request interception: the site itself is unchanged.
            await page.route(f"{proxy.base}/page",
                             lambda route: route.fulfill(body=html, content_type="text/html"))
            await svc.wait_listening()
            await page.goto(f"{proxy.base}/page")

            async def received(item: str, timeout: float = 30.0) -> None:
                await page.wait_for_function(
                    "id => entries.some(e => e.type === 'items:updated'"
                    " && JSON.parse(e.data).id === id)", arg=item, timeout=timeout * 1000)

            await svc.wait_streams(1, timeout=30)
            await notify(db, user, {"id": "before", "wishlist_id": "w"})
            await received("before")

            await svc.stop()
            await asyncio.sleep(10)  # the outage (nothing is asserted about its quiet)
            svc = await start(settings, port)
            await svc.wait_listening()
            # The page's EventSource comes back by itself, within its last retry: delay.
            await svc.wait_streams(1, timeout=30)
            await notify(db, user, {"id": "after", "wishlist_id": "w"})
            await received("after")

            entries: list[dict[str, Any]] = await page.evaluate("entries")
        finally:
            await browser.close()
            await svc.stop()
        log = proxy.access_log.read_text()
    assert not [e for e in entries if e.get("readyState") == 2], entries  # never CLOSED
    # It kept trying during the outage, paced by the jittered retry: (1-4.75 s).
    retries = [line for line in log.splitlines() if " 200 " in line and "/502 " in line]
    assert 2 <= len(retries) <= 15, log
    assert [e["type"] for e in entries].count("open") >= 2 + len(retries)
