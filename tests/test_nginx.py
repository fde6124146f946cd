"""The shipped nginx site (systemd/nginx-sse-service.conf) in front of the real service.

A real nginx (Debian's /usr/sbin/nginx) runs in the foreground with a temporary
prefix and a main config that includes the shipped file itself, changed only
where a test must: the upstream port, a free listen port, a self-signed
certificate and log paths. Events must pass through unbuffered and
uncompressed, over HTTP/1.1 and HTTP/2, and no ``?token=`` may reach a log.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sse_service import sites
from sse_service.app import create_app
from sse_service.bench.nginxsite import NGINX, TLS, private_nginx
from tests.harness import Running, running, settings_for, token

STREAM = "/api/v1/events/stream"

pytestmark = [
    pytest.mark.slow,  # each test runs an nginx of its own
    pytest.mark.skipif(not NGINX.exists(),
                       reason="nginx is not installed (.ci/run installs Debian's nginx)"),
]


@dataclass
class Nginx:
    port: int
    scheme: str
    logs: Path
    pid: int

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.logs / "sse-service.access.log"

    def all_logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))

    async def access_line(self, path: str, timeout: float = 5.0) -> str:
        """The access-log line for a request to ``path`` (nginx writes it at the end)."""
        async with asyncio.timeout(timeout):
            while True:
                if self.access_log.exists():
                    for line in self.access_log.read_text().splitlines():
                        if f" {path} " in line:
                            return line
                await asyncio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLS | None]:
    """A self-signed certificate for 127.0.0.1, or None without the openssl tool."""
    openssl = shutil.which("openssl")
    if openssl is None:
        yield None
        return
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30)
    yield TLS(cert, key)


# As Debian's nginx.conf, and more: compress event streams too, unless the site's
# location turns gzip off. The service sends "X-Accel-Buffering: no"; ignore it, so
# that the tests check the site's own proxy_buffering off.
HTTP_EXTRA = """
    gzip on;
    gzip_min_length 1;
    gzip_types text/event-stream application/json;
    proxy_ignore_headers X-Accel-Buffering;
"""


@asynccontextmanager
async def nginx(tmp_path: Path, upstream: int | str | list[int | str],
                tls: TLS | None) -> AsyncIterator[Nginx]:
    """A foreground nginx running the shipped site, until the block ends.

    ``upstream``: the service's port or the path of its Unix socket, or a list of them."""
    upstreams = upstream if isinstance(upstream, list) else [upstream]
    servers = [f"unix:{u}" if isinstance(u, str) else f"127.0.0.1:{u}" for u in upstreams]
    port = free_port()
    async with private_nginx(tmp_path / "nginx", servers, port, tls=tls,
                             http_extra=HTTP_EXTRA) as proc:
        yield Nginx(port, "https" if tls else "http", proc.logs, proc.pid)


async def run(*args: str) -> tuple[int, str]:
    """Exit code and output (stdout and stderr) of a short command."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def client_session() -> aiohttp.ClientSession:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ctx),
        timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        auto_decompress=False)


@asynccontextmanager
async def open_stream(session: aiohttp.ClientSession, url: str,
                      **kwargs: Any) -> AsyncIterator[aiohttp.ClientResponse]:
    """A GET whose connection is dropped at the end, the way a closed tab drops it.

    (Not ``resp.close()``: asyncio's TLS close waits for the peer's close_notify
    before it sends FIN, and nginx waits for the FIN.)
    """
    resp = await asyncio.wait_for(session.get(url, **kwargs), 5)  # a buffering proxy hangs
    try:
        yield resp
    finally:
        if resp.connection is not None and resp.connection.transport is not None:
            resp.connection.transport.abort()
        resp.close()


async def notify(db: Any, user: str, data: dict[str, Any]) -> None:
    payload = json.dumps({"event": "items:updated", "users": [user], "data": data})
    await db.execute("SELECT pg_notify('sse_events', $1)", payload)


async def next_event(lines: AsyncIterator[str], timeout: float) -> tuple[str, str]:
    """(event, data) of the next non-ping event from an iterator of SSE lines."""
    async with asyncio.timeout(timeout):
        event, data = "", ""
        async for line in lines:
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                data = line.partition(":")[2].strip()
            elif not line and data:
                if event != "sync:ping":
                    return event, data
                event, data = "", ""
    raise EOFError("stream ended")


async def response_lines(resp: aiohttp.ClientResponse) -> AsyncIterator[str]:
    while True:
        raw = await resp.content.readline()
        if not raw:
            return
        yield raw.decode().rstrip("\r\n")


async def test_events_pass_unbuffered_and_the_token_is_not_logged(
        tmp_path: Path, tls: TLS | None, service: Running, db: Any) -> None:
    user = str(uuid.uuid4())
    secret = token(user)
    async with nginx(tmp_path, service.port, tls) as proxy, client_session() as session:
        url = f"{proxy.base}{STREAM}?token={secret}"
        async with open_stream(session, url, headers={"Accept-Encoding": "gzip, deflate, br",
                                                      "Accept": "text/event-stream"}) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert "Content-Encoding" not in resp.headers
            lines = response_lines(resp)
            # The preamble arrives at once: nothing waits for a buffer to fill.
            first = await asyncio.wait_for(anext(lines), 2)
            assert first.startswith("retry:")
            await service.wait_streams(1)
            for n in range(3):
                await notify(db, user, {"id": f"i{n}", "wishlist_id": "w"})
                event, data = await next_event(lines, timeout=1.0)
                assert (event, json.loads(data)) == ("items:updated",
                                                     {"id": f"i{n}", "wishlist_id": "w"})
        line = await proxy.access_line(STREAM)
        assert "token" not in line
        assert secret not in proxy.all_logs()
        assert f'"GET {STREAM} HTTP/1.1"' in line


async def test_events_pass_over_the_unix_socket(
        tmp_path: Path, tls: TLS | None, database_dsn: str, db: Any) -> None:
    """The site's documented alternative upstream: the service's SSE_UNIX_SOCKET."""
    path = f"/tmp/sse-test-{uuid.uuid4().hex[:12]}.sock"  # sun_path is short
    settings = settings_for(database_dsn, SSE_UNIX_SOCKET=path)
    app = create_app(settings)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    try:
        async with sites.serving(runner, settings):
            service = Running(app, runner, runner.addresses[0][1])
            await service.wait_listening()
            user = str(uuid.uuid4())
            async with nginx(tmp_path, path, tls) as proxy, client_session() as session:
                url = f"{proxy.base}{STREAM}?token={token(user)}"
                async with open_stream(session, url) as resp:
                    assert resp.status == 200
                    lines = response_lines(resp)
                    await service.wait_streams(1)
                    await notify(db, user, {"id": "u1", "wishlist_id": "w"})
                    event, data = await next_event(lines, timeout=1.0)
                    assert (event, json.loads(data)) == ("items:updated",
                                                         {"id": "u1", "wishlist_id": "w"})
                assert f"upstream=unix:{path}/200" in await proxy.access_line(STREAM)
    finally:
        await runner.cleanup()


async def test_http2_towards_the_browser(
        tmp_path: Path, tls: TLS | None, service: Running, db: Any) -> None:
    curl = shutil.which("curl")
    if tls is None or curl is None:
        pytest.skip("HTTP/2 needs TLS (openssl) and curl")
    _, version = await run(curl, "-V")
    if "HTTP2" not in version:
        pytest.skip("this curl has no HTTP/2 support")
    user = str(uuid.uuid4())
    secret = token(user)
    async with nginx(tmp_path, service.port, tls) as proxy:
        proc = await asyncio.create_subprocess_exec(
            curl, "--http2", "-k", "-sS", "-N", "-i", "--max-time", "30",
            "-H", "Accept: text/event-stream", f"{proxy.base}{STREAM}?token={secret}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        stdout = proc.stdout

        async def lines() -> AsyncIterator[str]:
            while True:
                raw = await stdout.readline()
                if not raw:
                    return
                yield raw.decode().rstrip("\r\n")

        try:
            it = lines()
            status = await asyncio.wait_for(anext(it), 5)
            assert status.startswith("HTTP/2 200"), status
            await service.wait_streams(1)
            await notify(db, user, {"id": "h2", "wishlist_id": "w"})
            event, data = await next_event(it, timeout=1.0)
            assert (event, json.loads(data)) == ("items:updated", {"id": "h2", "wishlist_id": "w"})
        finally:
            proc.terminate()
            await proc.wait()
        line = await proxy.access_line(STREAM)
        assert f'"GET {STREAM} HTTP/2.0"' in line
        assert secret not in proxy.all_logs()


async def test_metrics_are_not_public(tmp_path: Path, tls: TLS | None, service: Running) -> None:
    async with nginx(tmp_path, service.port, tls) as proxy, client_session() as session:
        async with session.get(f"{proxy.base}/metrics") as resp:
            assert resp.status == 403
        async with session.get(f"{proxy.base}/healthz") as resp:
            assert resp.status == 404  # only /api/v1/events/ reaches the service


async def test_upstream_failures_do_not_log_the_token(tmp_path: Path, tls: TLS | None) -> None:
    """nginx quotes the request line, query included, in its error messages."""
    secret = token(str(uuid.uuid4()))
    async with nginx(tmp_path, free_port(), tls) as proxy, client_session() as session:
        async with open_stream(session, f"{proxy.base}{STREAM}?token={secret}") as resp:
            assert resp.status == 200  # see the next test
            await resp.read()
        line = await proxy.access_line(STREAM)
        assert "/502 " in line
        assert secret not in proxy.all_logs()


async def test_an_unavailable_service_asks_event_sources_to_retry(
        tmp_path: Path, tls: TLS | None) -> None:
    """While the service is down, a stream request gets a 200 event stream that holds
    only a jittered ``retry:``: a native EventSource would give up for good on a 502."""
    retries: set[int] = set()
    async with nginx(tmp_path, free_port(), tls) as proxy, client_session() as session:
        for _ in range(20):
            async with open_stream(session, f"{proxy.base}{STREAM}?token=x") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "text/event-stream"
                assert resp.headers["Cache-Control"] == "no-store"
                body = (await asyncio.wait_for(resp.read(), 5)).decode()
            fields = [line for line in body.split("\n") if line and not line.startswith(":")]
            assert len(fields) == 1 and fields[0].startswith("retry: "), body
            assert body.endswith("\n\n")
            retries.add(int(fields[0].removeprefix("retry: ")))
        # The status endpoint is not an event stream: its 502 stays a 502.
        async with session.get(f"{proxy.base}/api/v1/events/status") as resp:
            assert resp.status == 502
    assert min(retries) >= 1000 and max(retries) <= 4750
    assert len(retries) > 1  # jittered (20 draws of 16 values)


async def test_the_services_own_errors_pass_unchanged(
        tmp_path: Path, tls: TLS | None, database_dsn: str) -> None:
    """A 401 must stay a 401 (the client needs a new token), and the service's own 503
    (over capacity, with Retry-After) stays a 503: only nginx's own errors become retries."""
    async with running(settings_for(database_dsn, SSE_MAX_STREAMS="1")) as svc, \
            nginx(tmp_path, svc.port, tls) as proxy, client_session() as session:
        async with session.get(f"{proxy.base}{STREAM}?token=not-a-token") as resp:
            assert resp.status == 401
            assert resp.headers["Content-Type"].startswith("application/json")
            assert "WWW-Authenticate" in resp.headers
            assert (await resp.json())["error"]
        url = f"{proxy.base}{STREAM}?token={token(str(uuid.uuid4()))}"
        async with open_stream(session, url) as first:
            assert first.status == 200
            await svc.wait_streams(1)
            async with session.get(url) as resp:
                assert resp.status == 503
                assert "Retry-After" in resp.headers
                assert (await resp.json())["error"]


async def test_large_events_and_replays_pass_the_small_relay_buffer(
        tmp_path: Path, tls: TLS | None, service: Running, db: Any) -> None:
    """The site relays through a 1k buffer per stream: an event of several kilobytes
    and a replay of many events on reconnect still arrive whole and in order."""
    user = str(uuid.uuid4())
    big = "x" * 7000  # near NOTIFY's 8000-byte limit
    async with nginx(tmp_path, service.port, tls) as proxy, client_session() as session:
        url = f"{proxy.base}{STREAM}?token={token(user)}"
        async with open_stream(session, url) as resp:
            lines = response_lines(resp)
            await service.wait_streams(1)
            await notify(db, user, {"id": big, "wishlist_id": "w"})
            last_id, data = "", ""
            async with asyncio.timeout(5):
                async for line in lines:
                    if line.startswith("id:"):
                        last_id = line.partition(":")[2].strip()
                    elif line.startswith("data:"):
                        data = line.partition(":")[2].strip()
                    elif not line and data:
                        if json.loads(data) == {"id": big, "wishlist_id": "w"}:
                            break
                        data = ""
        await service.wait_streams(0)
        for n in range(60):  # missed while away: replayed at once on reconnect
            await db.execute("SELECT pg_notify('sse_events', $1)", json.dumps(
                {"event": "items:updated", "users": [user], "id": f"r{n}",
                 "data": {"id": f"r{n}", "wishlist_id": "w"}}))
        await notify(db, user, {"id": "sentinel", "wishlist_id": "w"})
        async with open_stream(session, url, headers={"Last-Event-ID": last_id}) as resp:
            lines = response_lines(resp)
            got = [json.loads((await next_event(lines, timeout=5.0))[1])["id"]
                   for _ in range(61)]
    assert got == [f"r{n}" for n in range(60)] + ["sentinel"]
