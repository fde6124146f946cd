"""The browser client's files as the service serves them: types and validators."""

from __future__ import annotations

from pathlib import Path

from sse_service import assets
from tests.harness import Running
from tests.sseclient import request

CLIENT = assets.CLIENT_PREFIX + "realtime.js"


async def test_module_served_with_type_and_validators(service: Running) -> None:
    resp = await request(service.port, CLIENT)
    assert resp.status == 200
    assert resp.headers["content-type"] == "text/javascript; charset=utf-8"
    assert resp.headers["cache-control"] == "no-cache"
    assert resp.headers["x-content-type-options"] == "nosniff"
    etag = resp.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert resp.body == (assets.WEB_DIR / "realtime.js").read_bytes()
    assert b"export function createRealtimeClient" in resp.body

    again = await request(service.port, CLIENT, headers={"If-None-Match": etag})
    assert again.status == 304
    assert again.body == b""
    assert again.headers["etag"] == etag

    other = await request(service.port, CLIENT, headers={"If-None-Match": '"other"'})
    assert other.status == 200

    since = await request(service.port, CLIENT,
                          headers={"If-Modified-Since": resp.headers["last-modified"]})
    assert since.status == 304


async def test_declarations_served_and_unknown_names_refused(service: Running) -> None:
    resp = await request(service.port, assets.CLIENT_PREFIX + "realtime.d.ts")
    assert resp.status == 200
    assert resp.headers["content-type"] == "application/typescript; charset=utf-8"
    assert b"createRealtimeClient" in resp.body
    for name in ("nope.js", "..%2Fassets.py", "realtime.js.map", "../state.py", "demo.js"):
        missing = await request(service.port, assets.CLIENT_PREFIX + name)
        assert missing.status == 404, name
        assert missing.json["error"] == "not_found"
    post = await request(service.port, CLIENT, method="POST")
    assert post.status == 405


def test_only_known_kinds_are_loaded(tmp_path: Path) -> None:
    (tmp_path / "a.js").write_text("export {};")
    (tmp_path / "a.d.ts").write_text("export {};")
    (tmp_path / "secret.txt").write_text("no")
    (tmp_path / "demo.js").write_text("export {};")  # only `sse-service demo` serves it
    (tmp_path / "sub.js").mkdir()
    loaded = assets.load(tmp_path)
    assert sorted(loaded) == ["a.d.ts", "a.js"]
    assert loaded["a.d.ts"].content_type.startswith("application/typescript")
    assert assets.load(tmp_path / "missing") == {}
