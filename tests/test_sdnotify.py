"""systemd integration: sd_notify, the ``serve`` lifecycle, the shipped unit file.

A real AF_UNIX datagram socket plays systemd's notify socket. The lifecycle
test runs ``python -m sse_service serve`` as a subprocess, the way systemd
runs it, and stops it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sse_service import sdnotify, server
from sse_service.scratchdb import drop_database, with_database
from sse_service.settings import Settings
from tests.harness import JWT_KEY, runnable_unit, settings_for, token
from tests.sseclient import PRESENCE_TIMEOUT, SSEClient, request

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "sse-service.service"
ENV_EXAMPLE = ROOT / "systemd" / "sse-service.env.example"
STREAM = "/api/v1/events/stream"

# Runs the rest of its command line under the kernel's MemoryDenyWriteExecute
# (prctl PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN; Linux >= 6.3; kept across exec);
# exits 77 where the kernel has no such thing.
MDWE_EXEC = (
    "import ctypes, os, sys\n"
    "if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:\n"
    "    sys.exit(77)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
)


class NotifySocket:
    """The service manager's end: every datagram received, parsed, in order."""

    def __init__(self, address: str | bytes) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []
        self._arrived = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    @property
    def env_value(self) -> str:
        if isinstance(self.address, bytes):
            return "@" + self.address[1:].decode()
        return self.address

    def drain(self) -> None:
        """Read every datagram queued now. A sender's ``sendto`` on AF_UNIX queues
        its datagram at once: after the sender did something, this has it."""
        self._readable()

    def _readable(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            self.messages.append(fields)
            self._arrived.set()

    def index(self, key: str, start: int = 0) -> int | None:
        for i in range(start, len(self.messages)):
            if key in self.messages[i]:
                return i
        return None

    def count(self, key: str, start: int = 0, stop: int | None = None) -> int:
        return sum(key in m for m in self.messages[start:stop])

    async def wait_for(self, key: str, start: int = 0, timeout: float = PRESENCE_TIMEOUT,
                       count: int = 1) -> int:
        """Index of the ``count``-th message from ``start`` on that has ``key``."""
        async with asyncio.timeout(timeout):
            while True:
                seen = 0
                for i in range(start, len(self.messages)):
                    if key in self.messages[i]:
                        seen += 1
                        if seen == count:
                            return i
                self._arrived.clear()
                await self._arrived.wait()

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


@pytest.fixture
async def notify_socket() -> AsyncIterator[NotifySocket]:
    # Short path: AF_UNIX addresses are limited to 107 bytes.
    directory = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")
    sock = NotifySocket(os.path.join(directory, "notify"))
    try:
        yield sock
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def service_env(dsn: str, port: int, notify: NotifySocket) -> dict[str, str]:
    """The environment systemd would give the service (plus PATH and the like)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SSE_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env.update({
        "SSE_DATABASE_URL": dsn,
        "SSE_JWT_KEY": JWT_KEY,
        "SSE_PORT": str(port),
        "SSE_LISTEN_PROBE_INTERVAL": "0.5",
        "SSE_LISTEN_BACKOFF_MAX": "0.5",
        "SSE_LISTEN_CONNECT_TIMEOUT": "2",
        "NOTIFY_SOCKET": notify.env_value,
        "WATCHDOG_USEC": "500000",
    })
    return env


@asynccontextmanager
async def service_process(env: dict[str, str], log: Path, *,
                          mdwe: bool = False) -> AsyncIterator[asyncio.subprocess.Process]:
    args = ["-m", "sse_service", "serve"]
    if mdwe:
        args = ["-c", MDWE_EXEC, *args]
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def wait_answering(port: int, timeout: float = PRESENCE_TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                await request(port, "/healthz")
                return
            except OSError:
                await asyncio.sleep(0.02)


async def notify_event(dsn: str, user: str, data: dict[str, Any]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_notify('sse_events', $1)", json.dumps(
            {"event": "items:updated", "users": [user], "data": data}))
    finally:
        await conn.close()


async def stream_then_sigterm(proc: asyncio.subprocess.Process, port: int, dsn: str,
                              notify: NotifySocket, after: int) -> str:
    """An open stream gets an event; SIGTERM: STOPPING=1, retry:, clean EOF, exit 0.

    Returns the token the stream passed in its query string."""
    user = str(uuid.uuid4())
    secret = token(user)
    client = await SSEClient.open(port, f"{STREAM}?token={secret}")
    try:
        assert client.status == 200
        await client.preamble()
        await notify_event(dsn, user, {"id": "i1", "wishlist_id": "w1"})
        event = await client.next_event()
        assert (event.event, event.json) == ("items:updated", {"id": "i1", "wishlist_id": "w1"})
        assert client.retry == 3000
        proc.send_signal(signal.SIGTERM)
        await notify.wait_for("STOPPING", start=after)
        await client.wait_eof(timeout=PRESENCE_TIMEOUT)
        assert client.eof  # a zero-length chunk: the stream ended cleanly, not cut
        assert client.retry is not None and 500 <= client.retry <= 1500  # jittered, short
    finally:
        await client.close()
    assert await asyncio.wait_for(proc.wait(), PRESENCE_TIMEOUT) == 0
    return secret


@pytest.mark.slow  # a process of its own
async def test_serve_lifecycle_under_the_notify_protocol(
        pg_admin_dsn: str, notify_socket: NotifySocket, tmp_path: Path) -> None:
    # The database does not exist yet: the port answers, but LISTEN cannot be up.
    dsn = with_database(pg_admin_dsn, f"sse_test_late_{uuid.uuid4().hex[:12]}")
    port = free_port()
    log = tmp_path / "service.log"
    try:
        async with service_process(service_env(dsn, port, notify_socket), log) as proc:
            await wait_answering(port)
            ready = await request(port, "/readyz")
            assert ready.status == 503
            async with asyncio.timeout(PRESENCE_TIMEOUT):  # until a LISTEN attempt has failed
                while ready.json["listen"]["last_error"] is None:
                    await asyncio.sleep(0.05)
                    ready = await request(port, "/readyz")
            assert ready.status == 503
            notify_socket.drain()  # whatever it sent until now
            assert notify_socket.index("READY") is None
            waiting = notify_socket.index("STATUS")
            assert waiting is not None
            assert "waiting for the LISTEN connection" in notify_socket.messages[waiting]["STATUS"]

            admin = await asyncpg.connect(pg_admin_dsn)
            try:
                await admin.execute(f'CREATE DATABASE "{dsn.rsplit("/", 1)[1]}"')
            finally:
                await admin.close()
            at = await notify_socket.wait_for("READY")
            message = notify_socket.messages[at]
            assert message["READY"] == "1"
            assert message["MAINPID"] == str(proc.pid)
            assert f"127.0.0.1:{port}" in message["STATUS"]
            assert (await request(port, "/readyz")).status == 200  # LISTEN was up first

            # WATCHDOG_USEC=500000: a ping every 0.25 s from the event loop.
            await notify_socket.wait_for("WATCHDOG", start=at, count=3)
            assert notify_socket.count("WATCHDOG", stop=at) == 0
            secret = await stream_then_sigterm(proc, port, dsn, notify_socket, after=at)
            notify_socket.drain()  # the process has exited: everything it sent is queued
            stopping = notify_socket.index("STOPPING", start=at)
            assert stopping is not None
            assert notify_socket.count("WATCHDOG", start=stopping + 1) == 0
    finally:
        await drop_database(pg_admin_dsn, dsn)
    output = log.read_text()
    assert "SIGTERM received; stopping" in output
    assert "stopped" in output
    assert secret not in output


@pytest.mark.slow  # a process of its own
async def test_serve_under_memory_deny_write_execute(
        database_dsn: str, notify_socket: NotifySocket, tmp_path: Path) -> None:
    """The unit's MemoryDenyWriteExecute=yes, by the kernel's own switch for it."""
    probe = await asyncio.create_subprocess_exec(sys.executable, "-c", MDWE_EXEC, "-c", "pass")
    code = await asyncio.wait_for(probe.wait(), 30)
    if code == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux >= 6.3)")
    assert code == 0
    port = free_port()
    env = service_env(database_dsn, port, notify_socket)
    async with service_process(env, tmp_path / "service.log", mdwe=True) as proc:
        at = await notify_socket.wait_for("READY")
        await stream_then_sigterm(proc, port, database_dsn, notify_socket, after=at)


async def test_port_in_use_exits_71(database_dsn: str, notify_socket: NotifySocket) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = settings_for(database_dsn, SSE_PORT=str(port))
        code = await server.run(settings, {"NOTIFY_SOCKET": notify_socket.env_value})
    assert code == server.EX_OSERR == 71
    notify_socket.drain()  # run() has returned: all it sent is queued
    assert notify_socket.index("READY") is None
    assert any("cannot serve" in m.get("STATUS", "") for m in notify_socket.messages)


# -- the client on its own -----------------------------------------------------------


async def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = sdnotify.Notifier({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.watchdog() is False
    assert notifier.start_watchdog() is None


async def test_abstract_socket_and_one_message_per_call() -> None:
    name = f"sse-test-{uuid.uuid4().hex}"
    receiver = NotifySocket(b"\0" + name.encode())
    try:
        notifier = sdnotify.Notifier({"NOTIFY_SOCKET": "@" + name}, pid=4242)
        assert notifier.ready("serving\non 127.0.0.1:1") is True
        assert notifier.status("busy") and notifier.stopping() and notifier.mainpid(99)
        await receiver.wait_for("MAINPID", start=3)
        assert receiver.messages == [
            {"READY": "1", "MAINPID": "4242", "STATUS": "serving on 127.0.0.1:1"},
            {"STATUS": "busy"}, {"STOPPING": "1"}, {"MAINPID": "99"}]
        notifier.close()
    finally:
        receiver.close()


async def test_send_errors_are_logged_once_and_never_raised(
        caplog: pytest.LogCaptureFixture) -> None:
    notifier = sdnotify.Notifier({"NOTIFY_SOCKET": "/nonexistent/sse-test/notify"})
    try:
        with caplog.at_level(logging.WARNING, logger="sse_service.sdnotify"):
            assert notifier.ready() is False
            assert notifier.watchdog() is False
            assert notifier.stopping() is False
    finally:
        notifier.close()
    assert len(caplog.records) == 1
    assert "cannot notify the service manager" in caplog.records[0].getMessage()
    assert sdnotify.Notifier({"NOTIFY_SOCKET": "relative/path"}).enabled is False


def test_watchdog_interval_follows_systemd_rules() -> None:
    def interval(**env: str) -> float | None:
        return sdnotify.Notifier({"NOTIFY_SOCKET": "/run/x", **env}, pid=100).watchdog_interval

    assert interval() is None
    assert interval(WATCHDOG_USEC="30000000") == 15.0
    assert interval(WATCHDOG_USEC="500000", WATCHDOG_PID="100") == 0.25
    assert interval(WATCHDOG_USEC="500000", WATCHDOG_PID="101") is None  # not for us
    assert interval(WATCHDOG_USEC="0") is None
    assert interval(WATCHDOG_USEC="soon") is None


async def test_a_stalled_event_loop_stops_the_pings(notify_socket: NotifySocket) -> None:
    notifier = sdnotify.Notifier({"NOTIFY_SOCKET": notify_socket.env_value,
                                  "WATCHDOG_USEC": "100000"})
    task = notifier.start_watchdog(lambda: "7 streams")
    assert task is not None
    try:
        at = await notify_socket.wait_for("WATCHDOG", count=2)
        assert notify_socket.messages[at] == {"WATCHDOG": "1", "STATUS": "7 streams"}
        notify_socket.drain()  # a ping sent before the stall must not count as after it
        before = len(notify_socket.messages)
        time.sleep(0.5)  # the loop is stuck: 10 ping intervals go by  # noqa: ASYNC251
        notify_socket.drain()  # what arrived meanwhile, read without the loop
        assert len(notify_socket.messages) == before
    finally:
        task.cancel()
        notifier.close()


# -- the shipped files -------------------------------------------------------------------


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit, runnable here: ExecStart at this venv's sse-service, no User=/Group=."""
    return runnable_unit(UNIT, tmp_path / "sse-service.service")


@pytest.mark.slow  # a process of its own
def test_unit_file_verifies(unit_copy: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (.ci/run installs systemd)")
    result = subprocess.run([tool, "verify", str(unit_copy)], capture_output=True, text=True,
                            timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "sse-service" not in output, output


def test_unit_file_fits_the_service() -> None:
    unit: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            unit.setdefault(key, []).append(value)
    defaults = settings_for("postgresql://x/y")
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["EnvironmentFile"] == ["/etc/sse-service/sse-service.env"]
    # Stop: every stream closes at once, then handlers get SSE_SHUTDOWN_TIMEOUT.
    assert float(unit["TimeoutStopSec"][0]) >= 2 * defaults.shutdown_timeout + 5
    assert int(unit["LimitNOFILE"][0]) >= defaults.max_streams + 1000
    assert int(unit["WatchdogSec"][0]) >= 10


def test_env_example_lists_every_setting_with_its_default() -> None:
    required = {"SSE_DATABASE_URL": "postgresql://u@127.0.0.1:5432/db", "SSE_JWT_KEY": JWT_KEY}
    documented: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^#?(SSE_[A-Z_]+)=(.*)$", line)
        if match:
            documented[match[1]] = match[2]
    expected = {"SSE_" + name.upper() for name in Settings.__dataclass_fields__}
    assert set(documented) == expected
    # Uncommenting every line changes nothing: the commented values are the defaults.
    assert Settings.from_env({**documented, **required}) == Settings.from_env(required)
