"""``sse-service demo``: its endpoints in process, and the whole command in a browser.

The in-process tests run the demo's routes on the real application over a real
socket against a database of their own; the browser test starts the command
as a real subprocess (its own PostgreSQL cluster included) and drives its page
in Debian's Chromium through Playwright.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from sse_service import demo_app, demo_data, logs
from sse_service.app import create_app
from sse_service.scratchdb import free_port, server_answers
from tests.browser import chromium, requires_browser
from tests.harness import Running, service_env, settings_for, token
from tests.sseclient import SSEClient, request

if TYPE_CHECKING:
    from playwright.async_api import Locator, Page

try:
    from playwright.async_api import expect
except ImportError:  # pragma: no cover - the test extras install it; requires_browser skips
    pass


@dataclass
class DemoRun:
    svc: Running
    sample: demo_data.Sample
    http: aiohttp.ClientSession

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.svc.port}{demo_app.PAGE_PATH}"

    def token(self, role: str) -> str:
        person = self.sample.owner if role == "owner" else self.sample.viewer
        return token(person.id)

    async def call(self, method: str, path: str, who: str | None,
                   body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        headers = {} if who is None else {"Authorization": f"Bearer {self.token(who)}"}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.http.request(method, self.base + path, data=data,
                                     headers=headers) as resp:
            return resp.status, await resp.json()


@asynccontextmanager
async def demo_running(dsn: str, budget: demo_app.WriteBudget | None = None
                       ) -> AsyncIterator[DemoRun]:
    """The sample data, then the real app with the demo's routes, on a real socket."""
    conn = await asyncpg.connect(dsn)
    try:
        sample = await demo_data.seed(conn)
    finally:
        await conn.close()
    settings = settings_for(dsn)
    app = create_app(settings)
    tokens = {"owner": token(sample.owner.id), "viewer": token(sample.viewer.id)}
    demo_app.setup(app, demo_app.Demo(sample=sample, tokens=tokens, dsn=dsn),
                   budget or demo_app.WriteBudget(rate=1000, burst=1000))
    runner = web.AppRunner(app, handler_cancellation=True, access_log_class=logs.AccessLogger)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        svc = Running(app, runner, runner.addresses[0][1])
        await svc.wait_listening()
        async with aiohttp.ClientSession() as http:
            yield DemoRun(svc, sample, http)
    finally:
        await runner.cleanup()


async def test_the_production_app_has_no_demo_routes(service: Running) -> None:
    for path in ("/demo", "/demo/demo.js", "/demo/api/session", "/demo/api/view"):
        assert (await request(service.port, path)).status == 404, path


async def test_page_and_session(fresh_database_dsn: str) -> None:
    async with demo_running(fresh_database_dsn) as run:
        async with run.http.get(run.base) as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
            assert "/demo/demo.js" in await resp.text()
            assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
        async with run.http.get(run.base + "/demo.js") as resp:
            assert resp.status == 200 and resp.content_type == "text/javascript"
            assert "/api/v1/events/client/realtime.js" in await resp.text()
        status, session = await run.call("GET", "/api/session", None)
        assert status == 200
        assert session["users"]["owner"]["id"] == run.sample.owner.id
        assert session["users"]["viewer"]["id"] == run.sample.viewer.id
        # The tokens it hands out are ones the service accepts, for those users.
        stream = await SSEClient.open(run.svc.port, token=session["users"]["viewer"]["token"])
        try:
            assert stream.status == 200
            await run.svc.wait_streams(1)
            assert run.svc.service.hub.streams_of(run.sample.viewer.id) == 1
        finally:
            await stream.close()


async def test_surprise_mode_end_to_end(fresh_database_dsn: str) -> None:
    """The viewer's mark reaches the viewer and nothing of it reaches the owner,
    neither on the stream nor in the owner's view of the wishlist."""
    async with demo_running(fresh_database_dsn) as run:
        owner = await SSEClient.open(run.svc.port, token=run.token("owner"))
        viewer = await SSEClient.open(run.svc.port, token=run.token("viewer"))
        try:
            await run.svc.wait_streams(2)
            status, created = await run.call("POST", "/api/items", "owner", {"title": "Kettle"})
            assert status == 201
            item = created["id"]
            for stream in (owner, viewer):
                event = await stream.next_event(10)
                assert (event.event, event.json["id"]) == ("items:updated", item)

            status, marked = await run.call("POST", f"/api/items/{item}/mark", "viewer")
            assert (status, marked["marked"]) == (200, True)
            event = await viewer.next_event(10)
            assert (event.event, event.json["item_id"]) == ("marks:updated", item)

            # Barrier: an event the owner does get, after the mark.
            status, _ = await run.call("POST", "/api/wishlist", "owner", {"name": "Party"})
            assert status == 200
            event = await owner.next_event(10)
            assert event.event == "wishlists:updated"  # and no marks:updated before it
            assert "marks" not in owner.raw.decode()

            _, view = await run.call("GET", "/api/view", "owner")
            assert view["wishlist"]["name"] == "Party"
            assert {i["title"] for i in view["items"]} >= {"Kettle"}
            assert all(set(i) == {"id", "title", "status"} for i in view["items"])
            _, view = await run.call("GET", "/api/view", "viewer")
            mine = [i for i in view["items"] if i["mine"]]
            assert {i["id"] for i in mine} >= {item}

            status, resolved = await run.call("POST", f"/api/items/{item}/resolve", "owner")
            assert (status, resolved["status"]) == (200, "resolved")
            event = await owner.next_event(10)
            assert (event.event, event.json["status"]) == ("items:resolved", "resolved")
            # Once resolved there is nothing left to resolve.
            status, _ = await run.call("POST", f"/api/items/{item}/resolve", "owner")
            assert status == 404
        finally:
            await owner.close()
            await viewer.close()


async def test_who_may_do_what(fresh_database_dsn: str) -> None:
    async with demo_running(fresh_database_dsn) as run:
        _, view = await run.call("GET", "/api/view", "viewer")
        item = view["items"][0]["id"]
        assert (await run.call("POST", f"/api/items/{item}/mark", "owner"))[0] == 403
        for path, body in (("/api/items", {"title": "x"}), ("/api/wishlist", {"name": "x"}),
                           (f"/api/items/{item}/resolve", None)):
            assert (await run.call("POST", path, "viewer", body))[0] == 403, path
            assert (await run.call("POST", path, None, body))[0] == 401, path
        stranger = {"Authorization": f"Bearer {token(str(uuid.uuid4()))}"}
        async with run.http.get(run.base + "/api/view", headers=stranger) as resp:
            assert resp.status == 403
        assert (await run.call("POST", f"/api/items/{uuid.uuid4()}/mark", "viewer"))[0] == 404
        assert (await run.call("POST", "/api/items/not-a-uuid/mark", "viewer"))[0] == 404


BAD_BODIES = [
    b"not json", b"[1]", b'{"title": 5}', b'{"title": "   "}', b'{"title": "a\\u0000b"}',
    b'{"title": "line\\nbreak"}', ('{"title": "%s"}' % ("x" * 201)).encode(),
    ('{"title": "x", "pad": "%s"}' % ("y" * demo_app.MAX_BODY)).encode(),
]


async def test_input_is_bounded(fresh_database_dsn: str) -> None:
    async with demo_running(fresh_database_dsn) as run:
        for raw in BAD_BODIES:
            status, body = await run.call("POST", "/api/items", "owner", raw=raw)
            assert (status, body["error"]) == (400, "bad_request"), raw
        _, view = await run.call("GET", "/api/view", "owner")
        assert len(view["items"]) == len(demo_data.SAMPLE_ITEMS)


async def test_item_cap_and_write_budget(fresh_database_dsn: str) -> None:
    async with demo_running(fresh_database_dsn) as run:
        for n in range(demo_data.MAX_ITEMS - len(demo_data.SAMPLE_ITEMS)):
            status, _ = await run.call("POST", "/api/items", "owner", {"title": f"item {n}"})
            assert status == 201
        status, body = await run.call("POST", "/api/items", "owner", {"title": "one more"})
        assert (status, body["error"]) == (409, "conflict")
    # One write per 100 s after a burst of two: the third is refused, whatever the timing.
    async with demo_running(fresh_database_dsn,
                            demo_app.WriteBudget(rate=0.01, burst=2)) as run:
        for name in ("a", "b"):
            assert (await run.call("POST", "/api/wishlist", "owner", {"name": name}))[0] == 200
        async with run.http.post(run.base + "/api/wishlist", json={"name": "c"},
                                 headers={"Authorization": f"Bearer {run.token('owner')}"}
                                 ) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "1"
        _, view = await run.call("GET", "/api/view", "owner")
        assert view["wishlist"]["name"] == "b"


# -- the command itself, in a browser ------------------------------------------------


@dataclass
class DemoProcess:
    """``python -m sse_service demo`` with its output collected line by line."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def collect(self) -> None:
        # Read everything it prints, so that its access log never fills the pipe.
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip("\n"))
            self.changed.set()

    async def line_after(self, prefix: str, timeout: float) -> str:
        """What follows ``prefix`` on the first line holding it."""
        async with asyncio.timeout(timeout):
            while True:
                for line in self.lines:
                    if prefix in line:
                        return line.split(prefix, 1)[1].strip()
                if self.proc.returncode is not None:
                    raise AssertionError("demo exited:\n" + "\n".join(self.lines))
                self.changed.clear()
                await self.changed.wait()


def _stop_cluster_left_behind(cluster: Path) -> None:
    """After a failed test only: stop a postmaster the demo did not stop, remove its files."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((cluster / "data" / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown
    shutil.rmtree(cluster, ignore_errors=True)


@pytest.mark.slow
@requires_browser
async def test_demo_command_in_a_browser() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sse_service", "demo", "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=service_env({}), start_new_session=True)
    demo = DemoProcess(proc)
    collector = asyncio.create_task(demo.collect())
    cluster: Path | None = None
    try:
        # initdb and the server's start take a while on a loaded machine.
        url = await demo.line_after("demo is running: open ", 180)
        assert url == f"http://127.0.0.1:{port}/demo"
        cluster = Path(await demo.line_after("cluster directory: ", 5))
        assert (cluster / "data" / "PG_VERSION").exists()
        pg_port = int(urlsplit(await demo.line_after("psql ", 5)).port or 0)
        assert server_answers("127.0.0.1", pg_port)

        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(url)
            await check_demo_page(page)

            proc.send_signal(signal.SIGINT)  # Ctrl-C, with both streams open
            async with asyncio.timeout(60):
                assert await proc.wait() == 0, "\n".join(demo.lines)
        await collector
        assert not cluster.exists()
        assert not server_answers("127.0.0.1", pg_port)
        assert any(line.startswith("removed the PostgreSQL cluster") for line in demo.lines)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(60):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        collector.cancel()
        if cluster is not None and cluster.exists():
            _stop_cluster_left_behind(cluster)


WAIT = 30_000  # ms, for every wait on something to appear


def logged(pane: Locator, event: str) -> Locator:
    """The entries of ``event`` in the pane's log of what its client received."""
    return pane.locator(f'ol.log li[data-event="{event}"]')


async def received(pane: Locator) -> list[str]:
    """The events the pane's client received, oldest first (resyncs left out)."""
    names = await pane.locator("ol.log li").evaluate_all(
        "(items) => items.map((li) => li.dataset.event)")
    return [name for name in reversed(names) if name != "resync"]


async def check_demo_page(page: Page) -> None:
    """Owner and viewer side by side: changes cross over, marks stay hidden."""
    owner = page.locator('section[data-pane="owner"]')
    viewer = page.locator('section[data-pane="viewer"]')
    for pane in (owner, viewer):
        await expect(pane.locator("[data-state]")).to_have_text("open", timeout=WAIT)
        await expect(pane.locator("li[data-item-id]")).to_have_count(
            len(demo_data.SAMPLE_ITEMS), timeout=WAIT)
    # The sample's mark: the viewer sees it, the owner's pane has no trace of marks.
    await expect(viewer.locator('[data-marked="true"]')).to_have_count(1, timeout=WAIT)

    # A click in the owner's pane reaches the viewer's pane (and the owner's own).
    await owner.locator('input[name="title"]').fill("Kettle")
    await owner.locator('button[data-action="add"]').click()
    kettle_for_viewer = viewer.locator("li[data-item-id]", has_text="Kettle")
    await expect(kettle_for_viewer).to_have_count(1, timeout=WAIT)
    kettle_for_owner = owner.locator("li[data-item-id]", has_text="Kettle")
    await expect(kettle_for_owner).to_have_count(1, timeout=WAIT)
    await expect(logged(viewer, "items:updated")).to_have_count(1, timeout=WAIT)

    # The viewer marks the kettle: his pane shows it...
    await kettle_for_viewer.locator('button[data-action="mark"]').click()
    await expect(kettle_for_viewer.locator('[data-marked="true"]')).to_have_count(1, timeout=WAIT)
    await expect(logged(viewer, "marks:updated")).to_have_count(1, timeout=WAIT)
    # ... and the owner's does not. Barrier: an event the owner does get, sent after
    # the mark; once it is in the owner's log, anything about the mark would be too.
    await owner.locator('input[name="name"]').fill("Alice's party")
    await owner.locator('button[data-action="rename"]').click()
    await expect(logged(owner, "wishlists:updated")).to_have_count(1, timeout=WAIT)
    await expect(owner.locator("h3.wishlist-name")).to_have_text("Alice's party", timeout=WAIT)
    await expect(viewer.locator("h3.wishlist-name")).to_have_text("Alice's party", timeout=WAIT)
    # Nothing but the two changes the owner made: not even the mark's timing.
    assert await received(owner) == ["items:updated", "wishlists:updated"]
    assert await owner.locator(".marks, [data-marked], [data-action=mark]").count() == 0

    # Resolving: the owner hears items:resolved, the viewer items:updated.
    await kettle_for_owner.locator('button[data-action="resolve"]').click()
    await expect(logged(owner, "items:resolved")).to_have_count(1, timeout=WAIT)
    await expect(kettle_for_viewer).to_have_attribute("data-status", "resolved", timeout=WAIT)
    assert await logged(viewer, "items:resolved").count() == 0
    assert await page.locator("#fatal").inner_text() == ""


@pytest.mark.slow
def test_demo_on_a_taken_port_exits_71_and_leaves_nothing() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "sse_service", "demo", "--port", str(port)],
            env=service_env({}), capture_output=True, text=True, timeout=180)
    assert result.returncode == 71, result.stdout + result.stderr
    assert f"cannot serve on 127.0.0.1:{port}" in result.stdout
    removed = [line for line in result.stdout.splitlines()
               if line.startswith("removed the PostgreSQL cluster in ")]
    assert len(removed) == 1
    assert not Path(removed[0].rsplit(" ", 1)[1]).exists()
