"""``sse-service bench fanout --nginx`` at a tiny scale: the service and the shipped
nginx site together, as deployed. Only the shape of the JSON result and the absence
of loss are checked; the figures depend on the machine and are never asserted."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sse_service.bench.nginxsite import NGINX
from tests.test_bench import NUMBER, bench_env, check_fanout, run_bench

pytestmark = pytest.mark.skipif(not NGINX.exists(),
                                reason="nginx is not installed (.ci/run installs it)")


@pytest.mark.parametrize("unix", [True, False], ids=["unix", "tcp"])
def test_fanout_through_nginx(pg_admin_dsn: str, unix: bool) -> None:
    result = run_bench(pg_admin_dsn, "fanout", "--streams", "20", "--users", "10",
                       "--rate", "50", "--duration", "1", "--fanout", "3", "--warmup", "0",
                       "--nginx", *(["--unix"] if unix else []))
    check_fanout(result, streams=20, measured=True)  # every event passed through nginx
    assert result["parameters"]["nginx"] is True
    nginx = result["nginx"]
    assert isinstance(nginx["pid"], int) and nginx["pid"] != result["service"]["pid"]
    assert nginx["port"] != result["service"]["port"]  # the clients went to nginx
    assert nginx["upstream"] == (f"unix:{result['service']['unix_socket']}" if unix
                                 else f"127.0.0.1:{result['service']['port']}")
    assert nginx["worker_processes"] == 1 and nginx["worker_connections"] >= 40
    for key in ("nginx_rss_before_bytes", "nginx_rss_idle_bytes",
                "nginx_memory_per_idle_stream_bytes", "nginx_cpu_us_per_delivery",
                "total_memory_per_idle_stream_bytes", "total_cpu_us_per_delivery"):
        assert isinstance(result[key], NUMBER), key
    assert set(result["nginx_cpu_seconds"]) == {"user", "system", "total"}
    assert result["total_memory_per_idle_stream_bytes"] == (
        result["memory_per_idle_stream_bytes"] + result["nginx_memory_per_idle_stream_bytes"])
    assert not os.path.exists(f"/proc/{nginx['pid']}/status")  # nginx was stopped


def test_nginx_needs_a_started_service(pg_admin_dsn: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sse_service", "bench", "fanout", "--nginx",
         "--target", "http://127.0.0.1:1"], env=bench_env(pg_admin_dsn),
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert "--nginx" in proc.stderr
