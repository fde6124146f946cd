"""``sse-service bench`` end to end, at a tiny scale: real service, real PostgreSQL.

Only the shape of the JSON result and the absence of loss are checked: the
figures themselves depend on the machine and are never asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import asyncpg
import pytest

from tests.conftest import ROOT, SCHEMA_SQL
from tests.harness import JWT_KEY, Running

NUMBER = (int, float)
pytestmark = pytest.mark.slow  # every test runs the bench as a process of its own


def bench_env(dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_")}
    env.update({"SSE_DATABASE_URL": dsn, "SSE_JWT_KEY": JWT_KEY})
    return env


def run_bench(dsn: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "sse_service", "bench", *args, "--schema", str(SCHEMA_SQL)],
        env=bench_env(dsn), cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)  # ONE JSON object, nothing else
    assert isinstance(result, dict)
    name = result["parameters"]["database"]
    assert name.startswith("sse_bench_")
    assert not asyncio.run(database_exists(dsn, name)), "the bench left its database behind"
    return result


async def database_exists(admin_dsn: str, name: str) -> bool:
    """Whether ``name`` exists: asked by name, since other test runs may be creating
    and dropping bench databases on the same server at the same time."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


def check_machine(result: dict[str, Any]) -> None:
    machine = result["machine"]
    assert isinstance(machine["nproc"], int) and machine["nproc"] >= 1
    assert isinstance(machine["cpu_model"], str | None)
    assert isinstance(machine["python"], str)
    assert isinstance(machine["postgres"], str) and machine["postgres"]


def check_fanout(result: dict[str, Any], *, streams: int, measured: bool) -> None:
    assert result["benchmark"] == "fanout"
    check_machine(result)
    assert result["parameters"]["streams"] == streams
    assert result["streams_held"] == streams
    assert result["streams_failed"] == 0
    assert result["service_streams"] == streams
    assert result["notifications_sent"] > 0
    assert result["expected_deliveries"] > 0
    assert result["deliveries_received"] == result["expected_deliveries"]
    assert result["loss_count"] == 0
    assert result["loss_fraction"] == 0.0
    assert result["unmatched_events"] == 0
    assert isinstance(result["deliveries_per_second"], NUMBER)
    assert result["deliveries_per_second"] > 0
    latency = result["latency_ms"]
    for key in ("p50", "p99", "max"):
        assert isinstance(latency[key], NUMBER)
    assert latency["p50"] <= latency["p99"] <= latency["max"]
    assert result["latency_samples"] == result["deliveries_received"]
    assert isinstance(result["client_cpu_seconds"], NUMBER)
    assert len(result["client_workers"]) == result["parameters"]["clients"]
    for key in ("memory_per_idle_stream_bytes", "service_cpu_us_per_delivery",
                "service_rss_idle_bytes"):
        if measured:
            assert isinstance(result[key], NUMBER), key
        else:
            assert result[key] is None, key
    if measured:
        assert set(result["service_cpu_seconds"]) == {"user", "system", "total"}
        assert result["service"]["spawned"] is True


def test_fanout_notify_spawns_the_service(pg_admin_dsn: str) -> None:
    result = run_bench(pg_admin_dsn, "fanout", "--streams", "20", "--users", "10",
                       "--rate", "50", "--duration", "1", "--fanout", "3", "--warmup", "0.3")
    check_fanout(result, streams=20, measured=True)  # the warm-up's events are not counted
    assert result["parameters"]["warmup"] == 0.3
    assert result["parameters"]["source"] == "notify"
    assert result["expected_deliveries"] == 50 * 3 * 2  # 2 streams per user


def test_fanout_through_the_real_triggers_over_a_unix_socket(pg_admin_dsn: str) -> None:
    result = run_bench(pg_admin_dsn, "fanout", "--streams", "20", "--users", "10",
                       "--rate", "50", "--duration", "1", "--fanout", "4",
                       "--source", "triggers", "--connections", "2", "--unix",
                       "--warmup", "0")
    check_fanout(result, streams=20, measured=True)
    assert result["parameters"]["transport"] == "unix"
    socket_path = result["service"]["unix_socket"]
    assert socket_path and not os.path.lexists(os.path.dirname(socket_path))  # cleaned up
    assert result["notifications_sent"] == 50
    assert result["expected_deliveries"] == 50 * 4 * 2


async def test_fanout_against_a_running_service(service: Running, database_dsn: str) -> None:
    """--target: the service is not ours, so no memory or CPU figures without --pid."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sse_service", "bench", "fanout",
        "--target", f"http://127.0.0.1:{service.port}", "--streams", "6", "--users", "3",
        "--rate", "40", "--duration", "0.5", "--fanout", "2", "--clients", "1", "--warmup", "0",
        env=bench_env(database_dsn), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    check_fanout(result, streams=6, measured=False)
    assert result["service"]["spawned"] is False
    await service.wait_streams(0)  # the bench closed its streams


def test_trigger_cost(pg_admin_dsn: str) -> None:
    result = run_bench(pg_admin_dsn, "triggers", "--viewers", "0,100", "--updates", "200",
                       "--repeat", "1", "--items", "10")
    assert result["benchmark"] == "triggers"
    check_machine(result)
    assert result["parameters"]["updates"] == 200
    runs = result["runs"]
    assert [(r["viewers"], r["config"]) for r in runs] == [
        (v, c) for v in (0, 100) for c in ("none", "notify", "sse")]
    for run in runs:
        assert isinstance(run["updates_per_second"], NUMBER) and run["updates_per_second"] > 0
        # The listener saw one notification per update exactly when something
        # notified: the reference and the real triggers send one each.
        assert run["notifications"] == (0 if run["config"] == "none" else 200)
    # ABC CBA: every set after the first starts with the previous set's last
    # configuration (the switches are the expensive part, and a drift cancels).
    configs = [r["config"] for r in result["rounds"] if r["viewers"] == 0]
    assert configs == ["none", "notify", "sse"]  # one set of 200
    assert [r["viewers"] for r in result["results"]] == [0, 100]
    for summary in result["results"]:
        for key in ("updates_per_second_without_triggers", "updates_per_second_with_triggers",
                    "ratio", "cost_fraction", "cost_fraction_beyond_notify"):
            assert isinstance(summary[key], NUMBER), key
        assert summary["ratio"] > 0
        reference = summary["notify_only"]
        for key in ("updates_per_second_notify_only", "ratio", "cost_fraction"):
            assert isinstance(reference[key], NUMBER), key


def test_trigger_cost_rotates_configurations(pg_admin_dsn: str) -> None:
    """Several sets per run: each one reverses the order of the last."""
    result = run_bench(pg_admin_dsn, "triggers", "--viewers", "1", "--updates", "2500",
                       "--repeat", "1", "--items", "10", "--no-listen")
    configs = [r["config"] for r in result["rounds"]]
    assert configs == ["none", "notify", "sse", "sse", "notify", "none",
                       "none", "notify", "sse"]
    assert [r["set"] for r in result["rounds"]] == [0] * 3 + [1] * 3 + [2] * 3
    assert all(r["notifications"] is None for r in result["runs"])  # nobody listened
    assert result["results"][0]["sets"] == 3


def test_bad_usage_is_refused(pg_admin_dsn: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sse_service", "bench", "fanout", "--streams", "5",
         "--users", "10"],
        env=bench_env(pg_admin_dsn), cwd=ROOT, capture_output=True, text=True, timeout=30,
        check=False)
    assert proc.returncode != 0
    assert "--users" in proc.stderr
    assert proc.stdout == ""
