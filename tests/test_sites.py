"""SSE_UNIX_SOCKET: the service on a Unix socket beside its TCP port.

The lifecycle runs ``python -m sse_service serve`` as a process of its own;
the refusals run the CLI's serve coroutine in-process, as test_sdnotify does
for a port in use.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from sse_service import server
from tests.harness import JWT_KEY, settings_for, token
from tests.sseclient import SSEClient, request
from tests.test_sdnotify import free_port, notify_event, wait_answering

STREAM = "/api/v1/events/stream"
ROOT = Path(__file__).resolve().parent.parent


def socket_path(tmp_path: Path) -> str:
    # sun_path is short (108 bytes) and pytest's tmp_path can be long.
    path = Path("/tmp") / f"sse-test-{uuid.uuid4().hex[:12]}.sock"
    assert len(str(path)) < 100 and tmp_path.exists()
    return str(path)


@pytest.mark.slow  # serves from a process of its own
async def test_streams_over_the_unix_socket_and_the_file_is_removed_on_exit(
        database_dsn: str, tmp_path: Path) -> None:
    path = socket_path(tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSE_", "NOTIFY_SOCKET"))}
    env.update({"SSE_DATABASE_URL": database_dsn, "SSE_JWT_KEY": JWT_KEY,
                "SSE_PORT": str(port), "SSE_UNIX_SOCKET": path,
                "SSE_LISTEN_PROBE_INTERVAL": "0.5", "SSE_LISTEN_BACKOFF_MAX": "0.5"})
    log = tmp_path / "service.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sse_service", "serve", env=env, stdout=out,
            stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        await wait_answering(port)
        async with asyncio.timeout(10):
            while (await request(port, "/readyz", unix=path)).status != 200:
                await asyncio.sleep(0.05)
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660  # SSE_UNIX_SOCKET_MODE

        user = str(uuid.uuid4())
        client = await SSEClient.open(0, STREAM, token=token(user), unix=path)
        try:
            assert client.status == 200 and client.chunked
            await client.preamble()
            await notify_event(database_dsn, user, {"id": "i1", "wishlist_id": "w1"})
            event = await client.next_event(timeout=5)
            assert (event.event, event.json) == ("items:updated",
                                                 {"id": "i1", "wishlist_id": "w1"})
            # A Unix-socket peer has no address: /metrics is refused to it.
            assert (await request(0, "/metrics", unix=path)).status == 403
            assert (await request(port, "/metrics")).status == 200
            proc.send_signal(signal.SIGTERM)
            await client.wait_eof(timeout=5)
            assert client.eof
        finally:
            await client.close()
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert not os.path.lexists(path), log.read_text()
    assert f"and {path}" in log.read_text()


async def test_a_stale_socket_file_is_replaced(database_dsn: str, tmp_path: Path) -> None:
    path = socket_path(tmp_path)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # a socket file nobody listens on: a crashed process's
    stale.close()
    settings = settings_for(database_dsn, SSE_PORT=str(free_port()), SSE_UNIX_SOCKET=path)
    serving = asyncio.create_task(server.run(settings, {}))
    try:
        async with asyncio.timeout(10):
            while True:
                try:
                    if (await request(0, "/healthz", unix=path)).status == 200:
                        break
                except OSError:
                    pass
                await asyncio.sleep(0.05)
    finally:
        os.kill(os.getpid(), signal.SIGTERM)  # _serve's own handler takes it
        assert await asyncio.wait_for(serving, 15) == 0
    assert not os.path.lexists(path)


async def test_a_socket_another_process_serves_is_left_alone(
        database_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = socket_path(tmp_path)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(path)
    other.listen()
    try:
        settings = settings_for(database_dsn, SSE_PORT=str(free_port()), SSE_UNIX_SOCKET=path)
        assert await server.run(settings, {}) == server.EX_OSERR
        assert "another process serves there" in caplog.text
        # Still the other process's socket: it accepts connections.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(path)
    finally:
        other.close()
        os.unlink(path)


async def test_a_path_that_is_not_a_socket_is_refused(
        database_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = socket_path(tmp_path)
    Path(path).write_text("not a socket")
    try:
        settings = settings_for(database_dsn, SSE_PORT=str(free_port()), SSE_UNIX_SOCKET=path)
        assert await server.run(settings, {}) == server.EX_OSERR
        assert "exists and is not a socket" in caplog.text
        assert Path(path).read_text() == "not a socket"
    finally:
        os.unlink(path)
