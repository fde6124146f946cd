"""``sse-service demo``: its endpoints in process, and the whole command in a browser.

The in-process tests run the demo's routes on the real application over a real
socket against a database of their own; the browser test starts the command
as a real subprocess (its own PostgreSQL cluster included) and drives its page
in Debian's Chromium through Playwright.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from sse_service import demo_app, demo_data, logs
from sse_service.app import create_app
from tests.harness import Running, settings_for, token
from tests.sseclient import SSEClient, request


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
