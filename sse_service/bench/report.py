"""The figures: receipts matched with their commits, percentiles, the JSON result's parts."""

from __future__ import annotations

import math
import statistics
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from sse_service.bench.emitters import Emission
from sse_service.bench.machine import CpuSample


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/p99.9/max/mean/min of ``values`` (nearest rank), in the same unit."""
    if not values:
        return {k: None for k in ("p50", "p90", "p99", "p999", "max", "mean", "min")}
    ordered = sorted(values)
    last = len(ordered) - 1

    def rank(q: float) -> float:
        return ordered[min(last, max(0, math.ceil(q * len(ordered)) - 1))]

    return {"p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "p999": rank(0.999),
            "max": ordered[-1], "mean": statistics.fmean(ordered), "min": ordered[0]}


def rounded(value: float | None, digits: int = 3) -> float | None:
    """``round(value, digits)``, None staying None."""
    return None if value is None else round(value, digits)


@dataclass
class Deliveries:
    """Every matched delivery's latency (ms), by commit second too."""

    latencies: list[float] = field(default_factory=list)
    from_send: list[float] = field(default_factory=list)
    per_second: dict[int, list[float]] = field(default_factory=dict)
    unmatched: int = 0
    last_receipt: float = 0.0

    def timeline(self) -> list[dict[str, Any]]:
        """p50/p99/max per second of emission: shows stalls and falling behind."""
        out = []
        for second in sorted(self.per_second):
            values = self.per_second[second]
            stats = percentiles(values)
            out.append({"second": second, "deliveries": len(values),
                        "p50_ms": rounded(stats["p50"]), "p99_ms": rounded(stats["p99"]),
                        "max_ms": rounded(stats["max"])})
        return out


def analyse(results: list[dict[str, Any]], emission: Emission,
            samples_path: str | None) -> Deliveries:
    """Match every received key with its commit; optionally write them all as CSV."""
    out = Deliveries()
    commits = emission.commits
    first = emission.first_send
    samples = open(samples_path, "w", encoding="ascii") if samples_path else None
    try:
        if samples is not None:
            samples.write("worker,key,send,commit,receipt\n")
        for w, r in enumerate(results):
            keys = array("q")
            keys.frombytes(r["keys"])
            times = array("d")
            times.frombytes(r["times"])
            for key, at in zip(keys, times, strict=True):
                sent_commit = commits.get(key)
                if sent_commit is None:
                    out.unmatched += 1
                    continue
                sent, committed = sent_commit
                ms = (at - committed) * 1000
                out.latencies.append(ms)
                out.from_send.append((at - sent) * 1000)
                out.per_second.setdefault(int(committed - first), []).append(ms)
                if samples is not None:
                    samples.write(f"{w},{key},{sent:.6f},{committed:.6f},{at:.6f}\n")
            if times:
                out.last_receipt = max(out.last_receipt, max(times))
    finally:
        if samples is not None:
            samples.close()
    return out


@dataclass
class Measured:
    """What the emission phase of ``bench fanout`` measured."""

    emission: Emission
    results: list[dict[str, Any]]  # each client worker's drain report
    deliveries: Deliveries
    before: CpuSample  # when emission started
    after: CpuSample  # when the deliveries were drained
    wall0: float  # time.time() at the start of emission
    emit_end: float  # ... at its end
    wall1: float  # ... after the drain
    emitter_cpu: float  # CPU seconds of this (the emitting) process during emission
    rss_after: int | None  # the service's RSS at the end, if its pid is known
    profile: str | None  # py-spy's output file
    samples: str | None  # the CSV of every delivery


def fanout_figures(m: Measured) -> dict[str, Any]:
    """The emission part of the ``bench fanout`` result (throughput, loss, latency, CPU)."""
    emission, results, deliveries = m.emission, m.results, m.deliveries
    expected = sum(emission.expected)
    received = sum(r["received"] for r in results)
    loss = max(0, expected - received)
    window = (deliveries.last_receipt - emission.first_send) if deliveries.last_receipt \
        else 0.0
    client_cpu = [r["cpu_user"] + r["cpu_system"] for r in results]
    service_cpu = None
    cpu0, cpu1 = m.before.service, m.after.service
    if cpu0 is not None and cpu1 is not None:
        user_s, sys_s = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
        service_cpu = {"user": round(user_s, 3), "system": round(sys_s, 3),
                       "total": round(user_s + sys_s, 3)}
    pg0, pg1 = m.before.postgres, m.after.postgres
    pg_cpu = (round(sum(pg1[p] - pg0[p] for p in pg0 if p in pg1), 3)
              if pg0 and pg1 else None)
    busy0, total0, busy1, total1 = m.before.busy, m.before.total, m.after.busy, m.after.total
    return {
        "notifications_sent": emission.sent,
        "emit_seconds": round(m.emit_end - m.wall0, 3),
        "notification_rate_achieved": round(emission.sent / max(1e-9, m.emit_end - m.wall0), 1),
        "expected_deliveries": expected,
        "deliveries_received": received,
        "loss_count": loss,
        "loss_fraction": (loss / expected) if expected else 0.0,
        "unmatched_events": deliveries.unmatched,
        "streams_lost_during_run": sum(r["lost_streams"] for r in results),
        "deliveries_per_second": round(received / window, 1) if window > 0 else None,
        "latency_ms": {k: rounded(v) for k, v in percentiles(deliveries.latencies).items()},
        "latency_samples": len(deliveries.latencies),
        "send_to_receipt_ms": {
            k: rounded(v) for k, v in percentiles(deliveries.from_send).items()},
        "latency_timeline": deliveries.timeline(),
        "emitter_round_trip_ms": {
            k: rounded(v) for k, v in
            percentiles([x * 1000 for x in emission.round_trips]).items()
            if k in ("p50", "p99", "max")},
        "service_cpu_seconds": service_cpu,
        "service_cpu_us_per_delivery": (
            round(service_cpu["total"] * 1e6 / received, 2)
            if service_cpu is not None and received else None),
        "service_rss_after_bytes": m.rss_after,
        "client_cpu_seconds": round(sum(client_cpu), 3),
        "client_workers": [
            {"received": r["received"], "expected": r["expected"],
             "cpu_seconds": round(c, 3),
             "cpu_utilization": round(c / r["wall"], 3) if r["wall"] else None}
            for r, c in zip(results, client_cpu, strict=True)],
        "emitter_cpu_seconds": round(m.emitter_cpu, 3),
        "postgres_cpu_seconds": pg_cpu,
        "machine_cpu_utilization": (
            round((busy1 - busy0) / (total1 - total0), 3) if total1 > total0 else None),
        "measure_seconds": round(m.wall1 - m.wall0, 3),
        "profile": m.profile,
        "samples": m.samples,
    }
