"""The machine and its processes, as ``/proc`` and ``getrlimit`` tell them.

The service's memory and CPU come from ``/proc/<pid>`` (``VmRSS``; ``utime``
+ ``stime``), so the benchmark's own work never counts in them.
"""

from __future__ import annotations

import os
import platform
import resource
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from sse_service import __version__
from sse_service.bench.common import BenchError

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (``VmRSS``)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid``, all its threads."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK


def try_cpu(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds (user + system) of each of ``pids`` that still exists."""
    out: dict[int, float] = {}
    for pid in pids:
        try:
            user, system = cpu_times(pid)
        except (OSError, ValueError, IndexError):
            continue
        out[pid] = user + system
    return out


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return total - idle, total


@dataclass(frozen=True)
class CpuSample:
    """CPU counters at one moment: the service's, PostgreSQL's backends', the machine's."""

    service: tuple[float, float] | None  # (user, system) seconds; None without a pid
    postgres: dict[int, float]  # backend pid -> CPU seconds
    busy: int  # machine jiffies
    total: int

    @classmethod
    def take(cls, pid: int | None, pg_pids: Iterable[int]) -> CpuSample:
        """Read the counters now."""
        service = cpu_times(pid) if pid else None
        postgres = try_cpu(pg_pids)
        busy, total = machine_ticks()
        return cls(service, postgres, busy, total)


def machine_info() -> dict[str, Any]:
    """The machine, the interpreter and the library versions, for the JSON result."""
    model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_total = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_total = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    versions: dict[str, str | None] = {"sse_service": __version__}
    for module in ("aiohttp", "aiohttp-sse", "asyncpg", "PyJWT"):
        try:
            versions[module] = package_version(module)
        except PackageNotFoundError:
            versions[module] = None
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_bytes": mem_total,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "versions": versions,
        "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }


def raise_nofile(wanted: int) -> int:
    """Raise this process's (and so its children's) open-files limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:  # root may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            wanted = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted
