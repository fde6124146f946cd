"""Several instances behind the shipped nginx site; PostgreSQL is the bus.

Two real service processes (``python -m sse_service serve``, each with its own
port and Unix socket, as ``systemd/sse-service@.service`` runs them) stand
behind a real nginx whose upstream lists both sockets. One is killed with
SIGKILL in the middle of a write burst: its clients reconnect through nginx to
the other and resume exactly from their ``Last-Event-ID``, with nothing lost and
nothing twice. Also: the template unit itself.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import IO, Any

import pytest

from sse_service.bench.nginxsite import NGINX
from sse_service.ids import IdCodec
from sse_service.scratchdb import free_port
from tests import factories
from tests.conftest import NotificationLog
from tests.guarantee import check_stream
from tests.harness import JWT_KEY, base_env, runnable_unit, service_env, token, wait_ready
from tests.sseclient import SSE, SSEClient, request
from tests.test_nginx import nginx

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "sse-service.service"
TEMPLATE = ROOT / "systemd" / "sse-service@.service"


# -- the template unit ---------------------------------------------------------------


def unit_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines()
            if line and not line.startswith(("#", ";"))]


def test_template_unit_is_the_unit_per_port() -> None:
    """The template differs from sse-service.service only where an instance must."""
    plain, template = unit_lines(UNIT), unit_lines(TEMPLATE)
    own = {"Environment=SSE_PORT=%i SSE_UNIX_SOCKET=/run/sse-service/%i/sse.sock",
           "EnvironmentFile=-/etc/sse-service/%i.env",  # the instance's overlay, read last
           "RuntimeDirectory=sse-service/%i",  # a shared one goes when any instance stops
           "SyslogIdentifier=sse-service@%i"}
    replaced = {"RuntimeDirectory=sse-service", "SyslogIdentifier=sse-service"}
    assert own <= set(template)
    assert [x for x in plain if x not in replaced and not x.startswith("Description=")] == \
           [x for x in template if x not in own and not x.startswith("Description=")]
    # The overlay comes after the shared file: its values win.
    files = [x for x in template if x.startswith("EnvironmentFile=")]
    assert files == ["EnvironmentFile=/etc/sse-service/sse-service.env",
                     "EnvironmentFile=-/etc/sse-service/%i.env"]


def test_template_unit_verifies(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (.ci/run installs systemd)")
    instance = runnable_unit(TEMPLATE, tmp_path / "sse-service@8091.service")
    result = subprocess.run([tool, "verify", str(instance)], capture_output=True, text=True,
                            timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "sse-service" not in output, output


# -- two instances, one killed --------------------------------------------------------


class Follower:
    """An EventSource through nginx: reconnects at once with the last id it saw."""

    def __init__(self, port: int, user: str) -> None:
        self.port = port
        self.user = user
        self.connections: list[list[SSE]] = []
        self.last_id: str | None = None
        self.stopped = asyncio.Event()

    @property
    def timeline(self) -> list[SSE]:
        return [e for conn in self.connections for e in conn]

    def received(self, event: str = "items:updated") -> list[str | None]:
        return [e.id for e in self.timeline if e.event == event]

    async def run(self) -> None:
        while not self.stopped.is_set():
            headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
            try:
                client = await SSEClient.open(self.port, token=token(self.user), headers=headers)
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                await asyncio.sleep(0.05)
                continue
            seen: list[SSE] = []
            self.connections.append(seen)
            try:
                while not self.stopped.is_set():
                    try:
                        seen.append(await client.next_event(timeout=0.1, skip_pings=False))
                    except TimeoutError:
                        pass
                    finally:
                        self.last_id = client.last_event_id or self.last_id
            except (EOFError, ConnectionError, OSError, ValueError, asyncio.IncompleteReadError):
                pass
            finally:
                await client.close()
            await asyncio.sleep(0.05)

    async def wait_for(self, event_id: str, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while event_id not in [e.id for e in self.timeline]:
                await asyncio.sleep(0.02)


def spawn(env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "sse_service", "serve"],
                            env=service_env(env), stdout=log, stderr=subprocess.STDOUT)


def ids_for(log: NotificationLog, user: str) -> list[str]:
    """The ids of the notifications addressed to ``user``, in order."""
    return [str(p["id"]) for p in log.payloads if user in p["users"]]


async def on_instance(port: int, user: str) -> bool:
    """Whether ``user`` has a stream open on the instance at ``port``."""
    reply = await request(port, "/api/v1/events/status", token=token(user))
    return bool(reply.json["connected"])


@pytest.mark.slow
@pytest.mark.skipif(not NGINX.exists(), reason="nginx is not installed (.ci/run installs it)")
async def test_clients_of_a_killed_instance_resume_on_another(
        tmp_path: Path, database_dsn: str, db: Any, notifications: NotificationLog) -> None:
    ports = [free_port(), free_port()]
    socks = [f"/tmp/sse-inst-{uuid.uuid4().hex[:10]}.sock" for _ in ports]
    busy = [await factories.user(db) for _ in range(8)]  # they get events all along
    quiet = [await factories.user(db) for _ in range(4)]  # their last id is a marker
    items = {u: await factories.item(db, await factories.wishlist(db, u)) for u in busy}
    await notifications.settle()
    notifications.clear()  # the set-up's own events came before any stream
    logs = [(tmp_path / f"instance{n}.log").open("wb") for n in range(2)]
    procs = [spawn(base_env(database_dsn, port, SSE_UNIX_SOCKET=sock), log)
             for port, sock, log in zip(ports, socks, logs, strict=True)]
    followers: list[Follower] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for port in ports:
            await wait_ready(port)
        async with nginx(tmp_path, list(socks), None) as proxy:
            for u in busy + quiet:  # one after another: least_conn alternates them
                followers.append(Follower(proxy.port, u))
                tasks.append(asyncio.create_task(followers[-1].run()))
                async with asyncio.timeout(30):
                    while not followers[-1].last_id:
                        await asyncio.sleep(0.02)
            doomed = {u for u in busy + quiet if await on_instance(ports[0], u)}
            # Both kinds of client on the instance to be killed, and busy ones elsewhere.
            assert doomed & set(busy) and doomed & set(quiet) and set(busy) - doomed, doomed

            async def touch(round_: int) -> None:
                for u in busy:
                    await db.execute("UPDATE items SET title = $2 WHERE id = $1",
                                     uuid.UUID(items[u]), f"t{round_}")

            ids = IdCodec(JWT_KEY)
            await touch(0)
            await notifications.settle()
            for f in followers[:len(busy)]:  # their resume point is now an event id
                await f.wait_for(ids.public(ids_for(notifications, f.user)[-1]))
            for round_ in range(1, 31):
                if round_ == 10:
                    procs[0].send_signal(signal.SIGKILL)
                await touch(round_)
                await asyncio.sleep(0.01)
            for u in quiet:  # a sentinel for each, with an id as the triggers give
                payload = {"event": "items:updated", "users": [u], "id": f"q-{u}",
                           "data": {"id": "q", "wishlist_id": "w"}}
                await db.execute("SELECT pg_notify('sse_events', $1)", json.dumps(payload))
            await notifications.settle()
            for f in followers:
                await f.wait_for(ids.public(ids_for(notifications, f.user)[-1]))
    finally:
        for f in followers:
            f.stopped.set()
        await asyncio.gather(*tasks)
        for proc in procs:
            proc.kill()
            proc.wait(5)
        for log in logs:
            log.close()

    for f in followers:
        mine = [ids.public(i) for i in ids_for(notifications, f.user)]
        if f.user in busy:
            # Exactly every event, in order, once: resumed from event ids, never reset.
            assert f.received() == mine, (f.user in doomed, f.timeline)
            assert not [e for e in f.timeline if e.event == "sync:reset"]
            if f.user in doomed:
                assert len(f.connections) >= 2  # it did lose its instance
        else:
            # Only a marker of the dead instance to resume from (issue 12): the
            # guarantee still holds, by exact resume or sync:reset.
            check_stream(f.timeline, mine)
            assert f.received() == mine[-1:]
