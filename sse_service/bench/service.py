"""The service under test: spawned as a process of its own, or targeted at a URL.

Everything the service process and its profiler get from the environment
comes from the mapping that the CLI passed in, never from ``os.environ``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from sse_service.bench.common import BenchError
from sse_service.settings import Settings


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def parse_target(target: str) -> tuple[str, int]:
    """(host, port) of ``--target`` (``http://host:port``, the scheme optional)."""
    parts = urlsplit(target if "://" in target else "http://" + target)
    if parts.scheme != "http" or not parts.hostname:
        raise BenchError("--target wants http://host:port")
    return parts.hostname, parts.port or 80


async def http_get(host: str, port: int, path: str, within: float = 5.0) -> tuple[int, bytes]:
    """A plain HTTP/1.0 GET; (status, body)."""
    async with asyncio.timeout(within):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            raw = await reader.read()
        finally:
            writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = 0
    return status, body


class ServiceProcess:
    """``python -m sse_service serve`` in a process of its own."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.port = port
        self.env = env
        self.log = tempfile.NamedTemporaryFile(  # kept open while the service runs
            prefix="sse-bench-service-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sse_service", "serve"],
            env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        """The service's process id."""
        return self.proc.pid

    def tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the service's log."""
        try:
            text = Path(self.log.name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_ready(self, within: float = 30.0) -> None:
        """Poll /readyz until 200; a BenchError with the log's tail otherwise."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the service exited with {self.proc.returncode}:\n"
                                 + self.tail())
            try:
                status, _ = await http_get("127.0.0.1", self.port, "/readyz", within=2)
                if status == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise BenchError("the service did not become ready:\n" + self.tail())

    async def stop(self) -> int | None:
        """SIGTERM (SIGKILL after 15 s); the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        self.log.close()
        return self.proc.returncode

    def discard_log(self) -> None:
        """Remove the log file (kept when the run failed)."""
        Path(self.log.name).unlink(missing_ok=True)


def service_env(settings: Settings, env: Mapping[str, str], dsn: str, port: int,
                streams: int, per_user: int, extra: Sequence[str]) -> dict[str, str]:
    """The started service's environment: ``env`` with its database, port and caps."""
    out = dict(env)
    out["SSE_DATABASE_URL"] = dsn
    out["SSE_HOST"] = "127.0.0.1"
    out["SSE_PORT"] = str(port)
    out["SSE_MAX_STREAMS"] = str(max(settings.max_streams, streams + 100))
    out["SSE_MAX_STREAMS_PER_USER"] = str(max(settings.max_streams_per_user, per_user))
    out["SSE_BACKLOG"] = str(max(settings.backlog, 4096))
    out.setdefault("SSE_LOG_LEVEL", "WARNING")
    out.pop("NOTIFY_SOCKET", None)  # not systemd's child
    out.pop("WATCHDOG_USEC", None)
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("SSE_"):
            raise BenchError(f"--service-env wants SSE_KEY=VALUE, got {item!r}")
        out[key] = value
    return out


async def service_streams(host: str, port: int, held: int) -> int | None:
    """The service's own count of open streams, once it reached ``held`` (or 10 s)."""
    deadline = time.monotonic() + 10
    count = None
    while time.monotonic() < deadline:
        try:
            status, body = await http_get(host, port, "/healthz")
            if status == 200:
                count = int(json.loads(body).get("streams", 0))
                if count >= held:
                    return count
        except (OSError, ValueError, TimeoutError):
            pass
        await asyncio.sleep(0.1)
    return count


def find_py_spy(env: Mapping[str, str]) -> str:
    """py-spy next to this interpreter, or on ``env``'s PATH."""
    candidates = [str(Path(sys.executable).parent / "py-spy"),
                  shutil.which("py-spy", path=env.get("PATH", os.defpath))]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise BenchError("--profile needs py-spy (pip install py-spy)")


def start_profiler(path: str | None, pid: int | None,
                   env: Mapping[str, str]) -> subprocess.Popen[bytes] | None:
    """py-spy recording ``pid`` into ``path`` (raw format); None without ``--profile``."""
    if path is None:
        return None
    if pid is None:
        raise BenchError("--profile needs the service's pid")
    return subprocess.Popen(
        [find_py_spy(env), "record", "--format", "raw", "--nonblocking", "--rate", "200",
         "-o", path, "-p", str(pid)],
        env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(proc: subprocess.Popen[bytes] | None, path: str | None) -> str | None:
    """Stop py-spy (it writes its file on SIGINT); the profile's path."""
    if proc is None:
        return None
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return path
