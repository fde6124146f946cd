"""A private nginx running the shipped site (``systemd/nginx-sse-service.conf``).

The benchmark's ``--nginx`` mode and the test suite run the very file that
operators install, changed only where a private run must be: the upstream
servers, a free listen port (plain HTTP, or TLS with a given certificate) and
the log paths. A main configuration around it supplies what Debian's
``nginx.conf`` would (temp paths, worker count and connections).
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sse_service.bench.common import BenchError

NGINX = Path("/usr/sbin/nginx")


def _site_file() -> Path:
    """``systemd/`` of the checkout, else the copy a regular install puts under
    ``<prefix>/share/sse-service/systemd``."""
    candidates = (Path(__file__).resolve().parents[2] / "systemd",
                  Path(sys.prefix) / "share" / "sse-service" / "systemd")
    for candidate in candidates:
        if (candidate / "nginx-sse-service.conf").is_file():
            return candidate / "nginx-sse-service.conf"
    return candidates[0] / "nginx-sse-service.conf"


SITE_FILE = _site_file()


@dataclass(frozen=True)
class TLS:
    """A certificate and its key, for a listener that speaks TLS (and HTTP/2)."""

    cert: Path
    key: Path


def site_config(text: str, upstreams: Sequence[str], listen_port: int, logs: Path,
                tls: TLS | None = None) -> str:
    """The shipped site's ``text`` pointed at a private run's own addresses.

    ``upstreams`` are nginx ``server`` addresses (``127.0.0.1:PORT`` or
    ``unix:PATH``), in order. A ValueError names any line of the site that is
    no longer where this expects it (the site changed shape).
    """
    if not upstreams:
        raise ValueError("at least one upstream server")

    def sub(pattern: str, replacement: str, count: int = 1) -> None:
        nonlocal text
        text, n = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        if n != count:
            raise ValueError(f"{SITE_FILE.name}: expected {count} match(es) of "
                             f"{pattern!r}, got {n}")

    servers = "".join(f"    server {where};\n" for where in upstreams)
    sub(r"^\s*server\s+127\.0\.0\.1:8090;.*\n", servers.replace("\\", r"\\"))
    text = re.sub(r"^\s*#server .*\n", "", text, flags=re.MULTILINE)  # documented alternatives
    sub(r"^\s*listen \[::\]:443 ssl http2;\n", "")
    if tls is not None:
        sub(r"^(\s*listen )443 ssl http2;", rf"\g<1>127.0.0.1:{listen_port} ssl http2;")
        sub(r"^(\s*ssl_certificate\s+)\S+;", rf"\g<1>{tls.cert};")
        sub(r"^(\s*ssl_certificate_key\s+)\S+;", rf"\g<1>{tls.key};")
    else:
        sub(r"^(\s*listen )443 ssl http2;", rf"\g<1>127.0.0.1:{listen_port};")
        sub(r"^\s*ssl_certificate(_key)?\s+\S+;\n", "", count=2)
    sub(r"/var/log/nginx/", f"{logs}/", count=3)
    return text


def main_config(prefix: Path, site: Path, *, worker_connections: int = 256,
                http_extra: str = "") -> str:
    """An ``nginx.conf`` for one foreground worker that includes ``site``."""
    temp_paths = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile {2 * worker_connections + 64};
pid {prefix}/nginx.pid;
error_log {prefix}/logs/main.error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
{temp_paths}
    default_type application/octet-stream;
{http_extra}
    include {site};
}}
"""


@dataclass
class RunningNginx:
    """A started private nginx: its port, log directory and process."""

    port: int
    logs: Path
    proc: asyncio.subprocess.Process

    @property
    def pid(self) -> int:
        """nginx's process id (master_process off: it is the worker too)."""
        return self.proc.pid


def prepare(prefix: Path, upstreams: Sequence[str], port: int, *, tls: TLS | None,
            worker_connections: int, http_extra: str) -> list[str]:
    """Write the site and main configuration under ``prefix``; nginx's command line."""
    if not NGINX.exists():
        raise BenchError(f"nginx is not installed ({NGINX})")
    logs = prefix / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    site = prefix / "sse-service.conf"
    site.write_text(site_config(SITE_FILE.read_text(), upstreams, port, logs, tls))
    conf = prefix / "nginx.conf"
    conf.write_text(main_config(prefix, site, worker_connections=worker_connections,
                                http_extra=http_extra))
    return [str(NGINX), "-p", str(prefix), "-c", str(conf), "-e", str(logs / "startup.error.log")]


@asynccontextmanager
async def private_nginx(prefix: Path, upstreams: Sequence[str], port: int, *,
                        tls: TLS | None = None, worker_connections: int = 256,
                        http_extra: str = "") -> AsyncIterator[RunningNginx]:
    """nginx in the foreground with the shipped site under ``prefix``, until the block ends."""
    args = prepare(prefix, upstreams, port, tls=tls, worker_connections=worker_connections,
                   http_extra=http_extra)
    check = await asyncio.create_subprocess_exec(
        *args, "-t", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(check.communicate(), 60)
    if check.returncode != 0:
        raise BenchError(f"nginx -t failed: {out.decode(errors='replace')}")
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        await _wait_port(proc, port)
        yield RunningNginx(port, prefix / "logs", proc)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _wait_port(proc: asyncio.subprocess.Process, port: int) -> None:
    async with asyncio.timeout(10):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if proc.returncode is not None:
                    stderr = await proc.stderr.read() if proc.stderr else b""
                    raise BenchError(f"nginx exited: {stderr.decode(errors='replace')}") from None
                await asyncio.sleep(0.02)
                continue
            writer.close()
            return
