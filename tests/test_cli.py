"""The ``sse-service`` command as an operator runs it: real processes, real database."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from typing import Any

import asyncpg
import pytest

from sse_service import __version__, sqlinstall
from sse_service import cli as cli_module
from sse_service.scratchdb import free_port
from tests.conftest import NotificationLog
from tests.harness import JWT_KEY, base_env, service_env, wait_ready


def cli(*args: str, dsn: str = "postgresql://postgres@127.0.0.1:1/none",
        **env: str) -> subprocess.CompletedProcess[str]:
    full = {"SSE_DATABASE_URL": dsn, "SSE_JWT_KEY": JWT_KEY, **env}
    return subprocess.run([sys.executable, "-m", "sse_service", *args], env=service_env(full),
                          capture_output=True, text=True, timeout=60)


@pytest.mark.slow  # runs the command in a process of its own
def test_version_and_help() -> None:
    result = subprocess.run([sys.executable, "-m", "sse_service", "--version"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == f"sse-service {__version__}"
    result = subprocess.run([sys.executable, "-m", "sse_service", "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for command in ("serve", "install-sql", "uninstall-sql", "check", "send", "bench"):
        assert command in result.stdout
    # bench's own parser is built only for bench, and still answers --help.
    result = subprocess.run([sys.executable, "-m", "sse_service", "bench", "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "fanout" in result.stdout and "triggers" in result.stdout
    result = subprocess.run([sys.executable, "-m", "sse_service", "bench", "triggers", "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "--viewers" in result.stdout


@pytest.mark.slow  # runs the command in a process of its own
def test_configuration_error_names_the_variable_and_exits_78() -> None:
    result = cli("check", SSE_PORT="http")
    assert result.returncode == 78
    assert "SSE_PORT" in result.stderr
    result = subprocess.run([sys.executable, "-m", "sse_service", "check"], env=service_env({}),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 78 and "SSE_DATABASE_URL" in result.stderr


@pytest.mark.slow  # runs the command in a process of its own
async def test_database_commands_need_only_the_database(fresh_database_dsn: str) -> None:
    """Issue 10: install-sql, uninstall-sql and send run with SSE_DATABASE_URL alone
    (no SSE_JWT_KEY, and serving settings that would not even parse)."""
    dsn = fresh_database_dsn
    bare = {"SSE_JWT_KEY": "", "SSE_PORT": "not a port"}
    result = cli("uninstall-sql", dsn=dsn, **bare)
    assert result.returncode == 0, result.stderr
    assert "FAIL triggers installed" in cli("check", dsn=dsn).stdout
    result = cli("install-sql", dsn=dsn, **bare)
    assert result.returncode == 0, result.stderr
    assert "installed; triggers notify channel 'sse_events'" in result.stdout

    log = NotificationLog()
    conn = await asyncpg.connect(dsn)
    try:
        await log.listen(conn)
        result = await asyncio.to_thread(cli, "send", "items:updated", "u1", dsn=dsn, **bare)
        assert result.returncode == 0, result.stderr
        await log.settle()
        assert [p["users"] for p in log.payloads] == [["u1"]]
    finally:
        await conn.close()
    assert cli("check", dsn=dsn).returncode == 0  # what serving needs is all there

    # check needs what serving needs: the key, and settings that parse.
    result = cli("check", dsn=dsn, SSE_JWT_KEY="")
    assert result.returncode == 78 and "SSE_JWT_KEY" in result.stderr
    result = cli("check", dsn=dsn, SSE_PORT="not a port")
    assert result.returncode == 78 and "SSE_PORT" in result.stderr
    # The database commands still validate what they use.
    result = cli("install-sql", dsn=dsn, SSE_JWT_KEY="", SSE_CHANNEL="Bad-Channel")
    assert result.returncode == 78 and "SSE_CHANNEL" in result.stderr
    result = cli("send", "items:updated", "u1", dsn="mysql://x", SSE_JWT_KEY="")
    assert result.returncode == 78 and "SSE_DATABASE_URL" in result.stderr


@pytest.mark.parametrize("command", ["check", "install-sql"])
@pytest.mark.slow  # runs the command in a process of its own
def test_malformed_database_url_option_is_a_configuration_error(
        pg_admin_dsn: str, command: str) -> None:
    """asyncpg checks sslmode=... only when it connects: a clear message, exit 78."""
    result = cli(command, dsn=pg_admin_dsn + "?sslmode=bogus")
    assert result.returncode == 78, result.stderr
    assert result.stderr.startswith("sse-service: configuration error: SSE_DATABASE_URL:")
    assert "sslmode" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow  # runs the command in a process of its own
def test_unreachable_database_exits_69() -> None:
    result = cli("check", SSE_LISTEN_CONNECT_TIMEOUT="1")
    assert result.returncode == 69
    assert "database unavailable" in result.stderr


@pytest.mark.slow  # runs the command in a process of its own
def test_bad_usage_exits_2() -> None:
    assert cli("frobnicate").returncode == 2
    assert cli("check", "--streams", "5").returncode == 2  # bench's option, not check's
    assert cli("bench", "--streams", "5").returncode == 2  # bench needs its mode
    assert cli("send", "bad event", "u1").returncode == 2
    assert cli("send", "items:updated", "u1", "--data", "[1]").returncode == 2


@pytest.mark.slow  # runs the command in a process of its own
async def test_install_check_send_uninstall(fresh_database_dsn: str) -> None:
    dsn = fresh_database_dsn
    assert cli("uninstall-sql", dsn=dsn).returncode == 0
    result = cli("check", dsn=dsn)
    assert result.returncode == 1
    assert "FAIL triggers installed" in result.stdout

    result = cli("install-sql", dsn=dsn, SSE_CHANNEL="sse_other")
    assert result.returncode == 0, result.stderr
    result = cli("check", dsn=dsn)  # the service would listen on sse_events: mismatch
    assert result.returncode == 1 and "FAIL triggers notify channel 'sse_other'" in result.stdout
    result = cli("check", dsn=dsn, SSE_CHANNEL="sse_other")
    assert result.returncode == 0, result.stdout
    assert result.stdout.count("ok") == 5

    log = NotificationLog()
    conn = await asyncpg.connect(dsn)
    try:
        await log.listen(conn, "sse_other")
        user = str(uuid.uuid4())
        result = await asyncio.to_thread(
            cli, "send", "items:resolved", user, "--data", '{"id":"x","title":"iPhone 15"}',
            dsn=dsn, SSE_CHANNEL="sse_other")
        assert result.returncode == 0, result.stderr
        await log.settle()
        payload: dict[str, Any] = json.loads(log.raw[-1])
        assert len(payload.pop("id")) == 32
        assert payload == {"event": "items:resolved", "users": [user],
                           "data": {"id": "x", "title": "iPhone 15"}}
    finally:
        await conn.close()
    assert cli("uninstall-sql", dsn=dsn).returncode == 0
    assert cli("check", dsn=dsn, SSE_CHANNEL="sse_other").returncode == 1


@pytest.mark.slow  # runs the command in a process of its own
def test_serve_tunes_the_garbage_collector() -> None:
    """serve() makes full collections rare and freezes start-up objects (README,
    Performance); in a process of its own, as it changes interpreter-wide state."""
    code = ("import gc; from sse_service import server; server.tune_gc(); "
            "print(gc.get_threshold() == server.GC_THRESHOLDS, gc.get_freeze_count() > 1000)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]


@pytest.mark.slow  # runs the command in a process of its own
def test_only_bench_imports_the_benchmark() -> None:
    """Issue 13: the parser of every other command leaves sse_service.bench unloaded."""
    code = ("import sys; from sse_service import cli; cli.parse(sys.argv[1:]); "
            "print(any(m.startswith('sse_service.bench') for m in sys.modules))")
    for argv, loaded in ([[], "False"], [["serve"], "False"], [["check"], "False"],
                         [["install-sql"], "False"], [["bench", "triggers"], "True"]):
        result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == loaded, argv


@pytest.mark.slow
@pytest.mark.slow  # runs the command in a process of its own
async def test_serving_process_never_imports_the_benchmark(database_dsn: str) -> None:
    """`python -X importtime -m sse_service serve`, run until ready and stopped:
    the serving path imports the server, and nothing of sse_service.bench."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "importtime", "-m", "sse_service", "serve",
        env=service_env(base_env(database_dsn, port)),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        await wait_ready(port, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    imported = {line.rsplit("|", 1)[1].strip() for line in stderr.decode().splitlines()
                if line.startswith("import time:") and line.count("|") == 2}
    assert {"sse_service.server", "sse_service.listener"} <= imported
    assert not {name for name in imported if name.startswith("sse_service.bench")}


def test_server_version_check() -> None:
    """PostgreSQL 14 or later (CREATE OR REPLACE TRIGGER); older ones are named."""
    assert sqlinstall.MIN_SERVER_VERSION == 140000
    sqlinstall.check_server_version(140000)
    sqlinstall.check_server_version(150020)
    with pytest.raises(sqlinstall.UnsupportedServer,
                       match=r"^PostgreSQL 13\.11 is too old: .* PostgreSQL 14 or later"):
        sqlinstall.check_server_version(130011)
    with pytest.raises(sqlinstall.UnsupportedServer, match=r"^PostgreSQL 9\.6 is too old"):
        sqlinstall.check_server_version(90624)


async def test_install_refuses_an_older_server_and_changes_nothing(
        fresh_database_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The real server's version passes; demanding one above it refuses before
    the script runs. The CLI turns the refusal into a message and exit 69."""
    conn = await asyncpg.connect(fresh_database_dsn)
    try:
        real = await sqlinstall.server_version(conn)
        assert real >= sqlinstall.MIN_SERVER_VERSION
        assert real // 10000 == conn.get_server_version().major
        await sqlinstall.uninstall(conn)
        with pytest.raises(sqlinstall.UnsupportedServer, match="is too old"):
            await sqlinstall.install(conn, minimum_version=real + 1)
        assert await conn.fetchval("SELECT to_regnamespace('sse')") is None
        assert not conn.is_in_transaction()
        await sqlinstall.install(conn, "sse_other", minimum_version=real)
        assert await conn.fetchval("SELECT sse.channel()") == "sse_other"
    finally:
        await conn.close()

    async def refused() -> int:
        sqlinstall.check_server_version(130011)
        return 0

    assert await asyncio.to_thread(cli_module._run, refused()) == 69
    assert "sse-service: PostgreSQL 13.11 is too old" in capsys.readouterr().err
