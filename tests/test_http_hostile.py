"""Anonymous clients that misbehave on purpose: malformed, oversized, slow, forged.

The service runs as ``sse-service serve`` runs it (``sites.serving`` on an
``AppRunner``), in-process; the descriptor-exhaustion test runs it as a
process of its own under a low ``RLIMIT_NOFILE``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from sse_service import logs, sites
from sse_service.app import create_app
from sse_service.service import SERVICE
from sse_service.settings import Settings
from tests.harness import settings_for, token

STREAM = "/api/v1/events/stream"
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Served:
    port: int
    runner: web.AppRunner


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Served]:
    """The service on 127.0.0.1 through ``sites.serving``, as the CLI serves it."""
    runner = web.AppRunner(create_app(settings), handler_cancellation=True,
                           access_log_class=logs.AccessLogger)
    await runner.setup()
    try:
        async with sites.serving(runner, settings):
            service = runner.app[SERVICE]
            async with asyncio.timeout(15):  # the LISTEN connection, and its first reset
                while not service.listener.state.connected or service.dispatcher.backlog:
                    await asyncio.sleep(0.01)
            yield Served(runner.addresses[0][1], runner)
    finally:
        await runner.cleanup()


@pytest.fixture
async def served(database_dsn: str) -> AsyncIterator[Served]:
    async with serving(settings_for(database_dsn, SSE_HOST="127.0.0.1")) as s:
        yield s


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


async def send_raw(port: int, data: bytes, timeout: float = 10.0) -> Answer:
    """Send ``data`` as it is and read the answer until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            raw = await reader.read(-1)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(lines[0].split()[1]), headers, body)


def get(path: str, *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: x", "Connection: close", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def assert_json_error(answer: Answer, status: int, *, secret: str | None = None) -> None:
    assert answer.status == status, answer
    assert answer.headers["content-type"].startswith("application/json"), answer
    assert set(answer.json) == {"error", "message"}, answer
    assert answer.headers["server"] == "sse-service"
    if secret is not None:
        assert secret[:16].encode() not in answer.body


# --- issue 12: errors are JSON, echo nothing, name no versions --------------------------


async def test_a_malformed_request_gets_json_that_echoes_nothing(served: Served) -> None:
    secret = token(str(uuid.uuid4()))
    # A control character in the request line: aiohttp's own 400 quoted ~100 bytes of it.
    answer = await send_raw(served.port, get(f"/x?token={secret}\x01"))
    assert_json_error(answer, 400, secret=secret)
    assert answer.json["error"] == "bad_request"
    answer = await send_raw(served.port, get(STREAM, f"Cookie: access_token={secret}\x01"))
    assert_json_error(answer, 400, secret=secret)


async def test_an_over_long_request_line_or_header_gets_json(served: Served) -> None:
    secret = token(str(uuid.uuid4()))
    answer = await send_raw(served.port, get(f"{STREAM}?token={secret}" + "a" * 9000))
    assert_json_error(answer, 400, secret=secret)
    answer = await send_raw(served.port, get(STREAM, f"Authorization: Bearer {secret}"
                                             + "a" * 9000))
    assert_json_error(answer, 400, secret=secret)


async def test_a_request_head_over_the_total_cap_gets_431(served: Served) -> None:
    # Each header within aiohttp's per-header limit, together beyond 32 KiB.
    headers = [f"X-Pad-{i}: " + "p" * 7000 for i in range(6)]
    answer = await send_raw(served.port, get("/healthz", *headers))
    assert_json_error(answer, 431)


async def test_a_path_with_a_newline_gets_a_json_404(served: Served) -> None:
    answer = await send_raw(served.port, get("/x%0Ay"))
    assert_json_error(answer, 404)
    assert answer.json["error"] == "not_found"


async def test_no_response_names_a_version(served: Served) -> None:
    for data in (get("/healthz"), get(STREAM), get("/nope"), get("/x%0A"),
                 get(f"{STREAM}?token={token('u')}", "Connection: close")):
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(data)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.close()
        assert b"\r\nServer: sse-service\r\n" in head, head
        assert b"aiohttp" not in head.lower() and b"python" not in head.lower(), head


# --- issue 10: no client can write a log line of its own --------------------------------

FORGED = "<2>sse_service.listener: LISTEN connection lost"


@contextmanager
def journal(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], list[str]]]:
    """The service's stdout log as ``sse-service serve`` sets it up: its new lines.

    Set up in the test's body: pytest resets the root logger's level after
    each fixture phase.
    """
    logs.setup("DEBUG")
    try:
        yield lambda: capsys.readouterr().out.splitlines()
    finally:
        logging.getLogger().handlers.clear()


async def test_a_decoded_line_break_in_the_path_stays_in_its_log_line(
        served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    path = "/x%0A%3C2%3Esse_service.listener:%20LISTEN%20connection%20lost%0D%E2%80%A8\\x0a"
    lines: list[str] = []
    with journal(capsys) as new_lines:
        answer = await send_raw(served.port, get(path))
        assert answer.status == 404
        await send_raw(served.port, get("/sentinel"))
        async with asyncio.timeout(10):
            while not any("/sentinel" in line for line in lines):
                await asyncio.sleep(0.02)
                lines += new_lines()
    assert all(line.startswith(("<6>", "<7>", "<4>", "<3>")) for line in lines), lines
    access = [line for line in lines if "LISTEN connection lost" in line]
    assert len(access) == 1, lines
    assert access[0].startswith(r"<6>aiohttp.access: GET /x\n<2>sse_service.listener: LISTEN "
                                r"connection lost\r\u2028\\x0a 404 "), lines


def test_every_record_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with journal(capsys) as new_lines:
        logging.getLogger("aiohttp.server").warning("quoted: %s", "a\n" + FORGED + "\x1b[2J")
        try:
            raise ValueError("bad\n" + FORGED)
        except ValueError:
            logging.getLogger("sse_service.test").exception("failed")
        lines = new_lines()
    assert len(lines) == 2, lines
    assert lines[0] == r"<4>aiohttp.server: quoted: a\n" + FORGED + r"\x1b[2J"
    assert lines[1].startswith(r"<3>sse_service.test: failed\nTraceback")
    assert lines[1].endswith(r"ValueError: bad\n" + FORGED)


# --- issue 11: connections that send nothing, too slowly, or too many ----------------------


async def wait_closed(reader: asyncio.StreamReader, timeout: float = 20.0) -> bytes:
    """What the server sent until it closed the connection (TimeoutError if it does not)."""
    async with asyncio.timeout(timeout):
        return await reader.read(-1)


async def test_slowloris_headers_are_cut_off_at_the_header_timeout(database_dsn: str) -> None:
    # The keep-alive timeout is far off: only the header timeout can close it in time.
    settings = settings_for(database_dsn, SSE_HEADER_TIMEOUT="1", SSE_KEEPALIVE_TIMEOUT="600")
    async with serving(settings) as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

        async def dribble() -> None:
            for i in range(200):  # one header line every 0.1 s, never the blank line
                await asyncio.sleep(0.1)
                writer.write(f"X-Slow-{i}: y\r\n".encode())

        task = asyncio.create_task(dribble())
        try:
            assert await wait_closed(reader) == b""  # closed, no answer
        finally:
            task.cancel()
            writer.close()
        silent_r, silent_w = await asyncio.open_connection("127.0.0.1", s.port)
        try:
            assert await wait_closed(silent_r) == b""  # one that never sends a byte
        finally:
            silent_w.close()


async def test_an_idle_keep_alive_connection_is_closed(database_dsn: str) -> None:
    settings = settings_for(database_dsn, SSE_HEADER_TIMEOUT="600", SSE_KEEPALIVE_TIMEOUT="1")
    async with serving(settings) as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" not in head
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            assert await wait_closed(reader) == b""
        finally:
            writer.close()


async def test_the_timeouts_never_close_an_open_stream(database_dsn: str) -> None:
    from tests.sseclient import SSEClient
    from tests.test_sdnotify import notify_event

    settings = settings_for(database_dsn, SSE_HEADER_TIMEOUT="0.2", SSE_KEEPALIVE_TIMEOUT="0.2")
    async with serving(settings) as s:
        user = str(uuid.uuid4())
        client = await SSEClient.open(s.port, STREAM, token=token(user))
        try:
            assert client.status == 200
            await asyncio.sleep(1.5)  # several timeouts' worth
            await notify_event(database_dsn, user, {"id": "sentinel"})
            event = await client.next_event(timeout=15)
            assert event.event == "items:updated" and json.loads(event.data) == {"id": "sentinel"}
        finally:
            await client.close()


# The service as `sse-service serve`, with few file descriptors to run out of.
LOW_FD_SERVE = """\
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
from sse_service import cli
sys.exit(cli.main(["serve"]))
"""


@pytest.mark.slow
async def test_out_of_file_descriptors_accepting_pauses_with_one_log_line(
        database_dsn: str, tmp_path: Path) -> None:
    from tests.harness import base_env, service_env, wait_ready
    from tests.sseclient import request
    from tests.test_sdnotify import free_port

    port = free_port()
    # Idle connections must stay open while we look: a long header timeout.
    env = service_env(base_env(database_dsn, port, SSE_HEADER_TIMEOUT="120"))
    log = tmp_path / "service.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LOW_FD_SERVE, env=env, stdout=out,
            stderr=subprocess.STDOUT, cwd=ROOT)
    clients: list[asyncio.StreamWriter] = []
    try:
        await wait_ready(port)
        for _ in range(100):  # more than 64: the kernel queues what the service cannot take
            clients.append((await asyncio.open_connection("127.0.0.1", port))[1])
        async with asyncio.timeout(15):
            while "accept" not in log.read_text():  # the first report, whatever its words
                await asyncio.sleep(0.05)
        await asyncio.sleep(3)  # several of asyncio's one-second pauses and retries
        text = log.read_text()
        # One line per 10 s at most (two if this machine is slow enough to cross one).
        assert 1 <= text.count("cannot accept connections") <= 2, text[-3000:]
        assert "out of system resource" not in text and "Traceback" not in text
        assert len(text.splitlines()) < 20, text[-3000:]
        for writer in clients:
            writer.close()
        clients.clear()
        async with asyncio.timeout(30):  # accepting resumes: /healthz answers again
            while True:
                try:
                    if (await request(port, "/healthz")).status == 200:
                        break
                except (OSError, TimeoutError):
                    pass
                await asyncio.sleep(0.1)
        assert proc.returncode is None
    finally:
        for writer in clients:
            writer.close()
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 20)
