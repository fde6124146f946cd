"""The ``sse-service`` command as an operator runs it: real processes, real database."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from typing import Any

import asyncpg

from sse_service import __version__
from tests.conftest import NotificationLog
from tests.harness import JWT_KEY, service_env


def cli(*args: str, dsn: str = "postgresql://postgres@127.0.0.1:1/none",
        **env: str) -> subprocess.CompletedProcess[str]:
    full = {"SSE_DATABASE_URL": dsn, "SSE_JWT_KEY": JWT_KEY, **env}
    return subprocess.run([sys.executable, "-m", "sse_service", *args], env=service_env(full),
                          capture_output=True, text=True, timeout=60)


def test_version_and_help() -> None:
    result = subprocess.run([sys.executable, "-m", "sse_service", "--version"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == f"sse-service {__version__}"
    result = subprocess.run([sys.executable, "-m", "sse_service", "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for command in ("serve", "install-sql", "uninstall-sql", "check", "send", "bench"):
        assert command in result.stdout


def test_configuration_error_names_the_variable_and_exits_78() -> None:
    result = cli("check", SSE_PORT="http")
    assert result.returncode == 78
    assert "SSE_PORT" in result.stderr
    result = subprocess.run([sys.executable, "-m", "sse_service", "check"], env=service_env({}),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 78 and "SSE_DATABASE_URL" in result.stderr


def test_unreachable_database_exits_69() -> None:
    result = cli("check", SSE_LISTEN_CONNECT_TIMEOUT="1")
    assert result.returncode == 69
    assert "database unavailable" in result.stderr


def test_bad_usage_exits_2() -> None:
    assert cli("frobnicate").returncode == 2
    assert cli("send", "bad event", "u1").returncode == 2
    assert cli("send", "items:updated", "u1", "--data", "[1]").returncode == 2


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
        await conn.add_listener("sse_other", log.callback)
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


def test_serve_tunes_the_garbage_collector() -> None:
    """serve() makes full collections rare and freezes start-up objects (README,
    Performance); in a process of its own, as it changes interpreter-wide state."""
    code = ("import gc; from sse_service import cli; cli.tune_gc(); "
            "print(gc.get_threshold() == cli.GC_THRESHOLDS, gc.get_freeze_count() > 1000)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]
