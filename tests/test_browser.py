"""A real browser's ``EventSource`` against the real service.

Headless Chromium (the Debian ``chromium`` package) loads a small page and the
page's own ``EventSource`` does everything a user's browser would: it sends
the token as ``?token=``, reconnects by itself after the ``retry:`` the server
asked for and sends its own ``Last-Event-ID``. The test drives the browser over
the DevTools protocol with aiohttp's WebSocket client; no extra packages.

The page is served from the service's own origin (a test-only route added to
the service application before it starts) because the service sends no CORS
headers: a cross-origin ``EventSource`` would be refused by the browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sse_service import logs
from sse_service.app import create_app
from sse_service.settings import Settings
from sse_service.wire import encode
from tests import factories
from tests.harness import Running, settings_for, token

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs the Debian package 'chromium' "
                       "(apt-get install chromium; .ci/run installs it)"),
]

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


async def start_with_page(settings: Settings, html: str, port: int = 0) -> Running:
    """The real app plus one test-only page, accepting only once LISTEN is up."""
    app = create_app(settings)

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app.router.add_get(PAGE_PATH, page)
    runner = web.AppRunner(app, handler_cancellation=True, access_log_class=logs.AccessLogger,
                           shutdown_timeout=settings.shutdown_timeout)
    await runner.setup()
    svc = Running(app, runner, port)
    try:
        # Accept no stream before the LISTEN connection is up: what a reconnecting
        # browser gets then does not depend on who wins that race.
        await svc.wait_listening()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=settings.backlog)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    svc.port = runner.addresses[0][1]
    return svc


# -- the browser, over the DevTools protocol ------------------------------------


@dataclass
class Page:
    ws: aiohttp.ClientWebSocketResponse
    _next_id: int = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        msg_id = self._next_id
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        async with asyncio.timeout(10):
            while True:
                msg = await self.ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"DevTools connection ended: {msg.type!r}")
                reply = json.loads(msg.data)
                if reply.get("id") != msg_id:
                    continue  # an event of a domain we did not ask about
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def entries(self) -> list[Entry]:
        text = await self.evaluate(
            "(document.getElementById('log') || {textContent: ''}).textContent")
        return [json.loads(line) for line in (text or "").splitlines() if line]

    async def wait_for(self, what: str, predicate: Callable[[list[Entry]], bool],
                       timeout: float = 10.0) -> list[Entry]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            entries = await self.entries()
            if predicate(entries):
                return entries
            if loop.time() >= deadline:
                raise AssertionError(f"the page never showed {what}; it shows {entries}")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def chromium(workdir: Path) -> AsyncIterator[Page]:
    """A headless Chromium with one blank tab; talks to 127.0.0.1 only."""
    assert CHROMIUM is not None
    profile = workdir / "profile"
    profile.mkdir()
    stderr = (workdir / "chromium.log").open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220 (returns at once; no blocking wait)
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-quic", "--no-first-run", "--no-default-browser-check",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--no-proxy-server",
         "--mute-audio", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
        start_new_session=True,  # its own process group: renderers go with it
    )
    try:
        async with aiohttp.ClientSession() as session:
            port = await _devtools_port(profile / "DevToolsActivePort", proc, workdir)
            async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with session.ws_connect(url, max_msg_size=0) as ws:
                yield Page(ws)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        for _ in range(50):
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stderr.close()


async def _devtools_port(path: Path, proc: subprocess.Popen[bytes], workdir: Path) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while loop.time() < deadline:
        if proc.poll() is not None:
            log = (workdir / "chromium.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"chromium exited with {proc.returncode}: {log}")
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            return int(path.read_text().splitlines()[0])
        await asyncio.sleep(0.05)
    raise TimeoutError("chromium did not open its DevTools port")


# -- the test ---------------------------------------------------------------------


def of_type(entries: list[Entry], kind: str) -> list[Entry]:
    return [e for e in entries if e["type"] == kind]


def item_events(entries: list[Entry]) -> dict[str, Entry]:
    """items:updated entries by item id."""
    return {json.loads(e["data"])["id"]: e for e in of_type(entries, "items:updated")}


async def test_browser_eventsource_live_resume_and_restart(
        database_dsn: str, db: Any, tmp_path: Path) -> None:
    owner = await factories.user(db)
    wishlist = await factories.wishlist(db, owner)
    # Short shutdown retry (jittered to 150..450 ms) keeps the test quick.
    settings = settings_for(database_dsn, SSE_SHUTDOWN_RETRY_MS="300")
    html = page_html(token(owner))
    svc = await start_with_page(settings, html)
    try:
        async with chromium(tmp_path) as page:
            await page.call("Page.navigate", url=f"http://127.0.0.1:{svc.port}{PAGE_PATH}")
            await page.wait_for("the stream opening", lambda es: len(of_type(es, "open")) == 1)
            await svc.wait_streams(1)

            # (a) A database change reaches the page live, with the trigger's id.
            first = await factories.item(db, wishlist, "Kettle")
            entries = await page.wait_for("the new item", lambda es: first in item_events(es))
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
            entries = await page.wait_for("the missed item, replayed",
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
            svc = await start_with_page(settings, html, port)
            entries = await page.wait_for(
                "a sync:reset after the restart", lambda es: bool(of_type(es, "sync:reset")))
            reset = of_type(entries, "sync:reset")[0]
            # Only a request carrying a Last-Event-ID unknown here gets this reason.
            assert json.loads(reset["data"]) == {"reason": "unknown_last_event_id"}
            assert reset["id"]  # a fresh resume point from the new process
            assert lost not in item_events(entries)  # the gap is signalled, not filled
            await svc.wait_streams(1)

            # (d) Live delivery works again after the restart.
            fourth = await factories.item(db, wishlist, "Mug")
            entries = await page.wait_for("an item after the restart",
                                          lambda es: fourth in item_events(es))
            assert len(of_type(entries, "open")) == 3
            # EventSource never gave up (readyState 2 = CLOSED): every error was a reconnect.
            assert all(e["readyState"] != 2 for e in of_type(entries, "error"))
            order = [json.loads(e["data"])["id"] for e in of_type(entries, "items:updated")]
            assert order == [first, second, fourth]
    finally:
        await svc.stop()

