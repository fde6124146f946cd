"""``bench fanout --nginx``: the service and nginx together, as deployed.

A private nginx runs the shipped site (:mod:`.nginxsite`), one worker process
in front of the spawned service (its Unix socket with ``--unix``, else its TCP
port); the clients connect to nginx. nginx's memory and CPU come from
``/proc/<pid>`` like the service's (``master_process off``: that one process is
the worker), so the result can add them up: what one idle stream and one
delivered event cost the host.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from sse_service.bench.machine import cpu_times, rss_bytes
from sse_service.bench.nginxsite import RunningNginx, private_nginx
from sse_service.bench.service import free_port


class NginxFront:
    """The shipped site's nginx in front of the benchmark's service."""

    def __init__(self, upstream: str, streams: int) -> None:
        self.upstream = upstream  # an nginx server address: 127.0.0.1:PORT or unix:PATH
        # Two connections per stream (client side, upstream side), plus spare for
        # connections still being opened or closed (fewer lost some streams).
        self.worker_connections = 2 * streams + 2048
        self.prefix = Path(tempfile.mkdtemp(prefix="sse-bench-nginx-"))
        self.proc: RunningNginx | None = None
        self._stack = AsyncExitStack()
        self.rss_before: int | None = None
        self.rss_idle: int | None = None
        self._cpu0: tuple[float, float] | None = None
        self._cpu1: tuple[float, float] | None = None

    async def start(self) -> int:
        """Start nginx; the port the clients connect to (127.0.0.1)."""
        self.proc = await self._stack.enter_async_context(private_nginx(
            self.prefix, [self.upstream], free_port(),
            worker_connections=self.worker_connections))
        return self.proc.port

    @property
    def pid(self) -> int | None:
        """nginx's (worker) process id, once started."""
        return None if self.proc is None else self.proc.pid

    def sample_idle(self, before: bool) -> None:
        """nginx's RSS before the streams open (``before``) or once they idle."""
        if self.pid is None:
            return
        if before:
            self.rss_before = rss_bytes(self.pid)
        else:
            self.rss_idle = rss_bytes(self.pid)

    def sample_cpu(self, before: bool) -> None:
        """nginx's CPU times at the start of the emission (``before``) or after the drain."""
        if self.pid is None:
            return
        if before:
            self._cpu0 = cpu_times(self.pid)
        else:
            self._cpu1 = cpu_times(self.pid)

    def figures(self, service_result: dict[str, Any]) -> dict[str, Any]:
        """nginx's part of the result, and the totals of both processes, given the
        service's part (streams held, deliveries received, the service's figures)."""
        held: int = service_result["streams_held"]
        received: int = service_result["deliveries_received"]
        per_stream = (round((self.rss_idle - self.rss_before) / held)
                      if self.rss_idle is not None and self.rss_before is not None and held
                      else None)
        cpu: dict[str, float] | None = None
        if self._cpu0 is not None and self._cpu1 is not None:
            user_s = self._cpu1[0] - self._cpu0[0]
            sys_s = self._cpu1[1] - self._cpu0[1]
            cpu = {"user": round(user_s, 3), "system": round(sys_s, 3),
                   "total": round(user_s + sys_s, 3)}
        per_event = round(cpu["total"] * 1e6 / received, 2) if cpu and received else None
        service_stream = service_result.get("memory_per_idle_stream_bytes")
        service_event = service_result.get("service_cpu_us_per_delivery")
        return {
            "nginx": {"pid": self.pid, "port": None if self.proc is None else self.proc.port,
                      "upstream": self.upstream, "worker_processes": 1,
                      "worker_connections": self.worker_connections},
            "nginx_rss_before_bytes": self.rss_before,
            "nginx_rss_idle_bytes": self.rss_idle,
            "nginx_memory_per_idle_stream_bytes": per_stream,
            "nginx_cpu_seconds": cpu,
            "nginx_cpu_us_per_delivery": per_event,
            "total_memory_per_idle_stream_bytes": (
                service_stream + per_stream
                if service_stream is not None and per_stream is not None else None),
            "total_cpu_us_per_delivery": (
                round(service_event + per_event, 2)
                if service_event is not None and per_event is not None else None),
        }

    async def stop(self) -> None:
        """Stop nginx and remove its files."""
        try:
            await self._stack.aclose()
        finally:
            shutil.rmtree(self.prefix, ignore_errors=True)
