"""The browser client's files, served at ``/api/v1/events/client/<name>``.

The PWA imports ``realtime.js`` (and ``vue.js``) straight from the service,
with no build step, so the module always matches the service that speaks the
protocol it parses. The files ship inside the package (``sse_service/web``);
they are read once at start-up, each with a strong ``ETag`` (a hash of the
bytes) and a ``Last-Modified``. ``Cache-Control: no-cache`` lets a browser keep
a copy but makes it ask again each time: a deploy is seen at the next load,
and an unchanged file costs a ``304`` without a body.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

from aiohttp import web

from sse_service.errors import Handler, json_errors, method_not_allowed

CLIENT_PREFIX = "/api/v1/events/client/"
WEB_DIR = Path(__file__).resolve().parent / "web"

DEMO_PREFIX = "demo."
# Only these kinds of file are served, each with its type; nothing else in web/ is.
CONTENT_TYPES = {
    ".d.ts": "application/typescript; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class Asset:
    """One file's bytes and its validators."""

    body: bytes
    content_type: str
    etag: str
    last_modified: datetime

    @property
    def headers(self) -> dict[str, str]:
        return {
            "ETag": self.etag,
            "Last-Modified": format_datetime(self.last_modified, usegmt=True),
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        }


def content_type(name: str) -> str | None:
    """The served type of a file name, or None when such files are not served."""
    for suffix, ctype in CONTENT_TYPES.items():
        if name.endswith(suffix):
            return ctype
    return None


def load(directory: Path = WEB_DIR) -> dict[str, Asset]:
    """Every servable file of ``directory`` by name, read now."""
    assets: dict[str, Asset] = {}
    if not directory.is_dir():
        return assets
    for path in sorted(directory.iterdir()):
        ctype = content_type(path.name)
        # The demo's page and script live in web/ too, but only `sse-service demo`
        # serves them (sse_service/demo_app.py): no deployment ships them.
        if ctype is None or path.name.startswith(DEMO_PREFIX) or not path.is_file():
            continue
        body = path.read_bytes()
        # HTTP dates have whole seconds; a finer mtime would never compare equal.
        mtime = datetime.fromtimestamp(int(path.stat().st_mtime), tz=UTC)
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[path.name] = Asset(body, ctype, etag, mtime)
    return assets


def not_modified(request: web.Request, asset: Asset) -> bool:
    """Whether the client's copy is current (RFC 9110 §13.2.2: If-None-Match wins)."""
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in tags or asset.etag in tags
    since = request.headers.get("If-Modified-Since")
    if since is None:
        return False
    try:
        when = parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False  # an unparsable date is ignored, as the RFC says
    if when.tzinfo is None:
        return False
    return asset.last_modified <= when


def handler(assets: dict[str, Asset]) -> Handler:
    """``GET /api/v1/events/client/{name}``: the file, a 304, or a JSON 404."""

    async def serve(request: web.Request) -> web.StreamResponse:
        asset = assets.get(request.match_info["name"])
        if asset is None:
            raise web.HTTPNotFound()
        if not_modified(request, asset):
            return web.Response(status=304, headers=asset.headers)
        return web.Response(body=asset.body, headers={
            **asset.headers, "Content-Type": asset.content_type})

    return serve


def setup(app: web.Application) -> None:
    """Add the client's route to ``app``."""
    path = CLIENT_PREFIX + "{name}"
    app.router.add_get(path, json_errors(handler(load())))  # HEAD too
    app.router.add_route("*", path, method_not_allowed(["GET", "HEAD"]))
