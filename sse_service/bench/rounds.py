"""``bench triggers``' timed rounds, in sets of one round per configuration, and
their figures.

A configuration is what fires on each item UPDATE:

* ``none``: nothing (the core API alone);
* ``notify``: a reference trigger that sends one notification of the same
  bytes as the real triggers would, built in advance: what PostgreSQL's
  NOTIFY itself costs the writer (the trigger call, the notification, the
  commit that signals every LISTENing backend, and those backends' and their
  clients' wake-ups on a machine that the writer shares with them);
* ``sse``: the real triggers (``sql/install.sql``).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

NONE, NOTIFY, SSE = "none", "notify", "sse"
CONFIGS = (NONE, NOTIFY, SSE)


@dataclass
class Round:
    """One timed round: ``updates`` UPDATEs in one configuration."""

    viewers: int
    repeat: int
    set: int
    config: str
    updates: int
    seconds: float
    cpu_seconds: float | None
    notifications: int | None

    @property
    def rate(self) -> float:
        return self.updates / self.seconds

    @property
    def cpu_us(self) -> float | None:
        """Backend CPU microseconds per update."""
        return None if self.cpu_seconds is None else self.cpu_seconds / self.updates * 1e6

    def as_json(self) -> dict[str, Any]:
        cpu_us = self.cpu_us
        return {"viewers": self.viewers, "repeat": self.repeat, "set": self.set,
                "config": self.config, "updates": self.updates,
                "seconds": round(self.seconds, 4), "updates_per_second": round(self.rate, 1),
                "backend_cpu_us_per_update": None if cpu_us is None else round(cpu_us, 2),
                "notifications": self.notifications}


@dataclass
class Sets:
    """The rounds of one viewer count, as sets of one round per configuration."""

    sets: list[dict[str, Round]] = field(default_factory=list)

    def ratios(self, config: str, base: str = NONE) -> list[float]:
        """rate(config) / rate(base), set by set."""
        return [s[config].rate / s[base].rate for s in self.sets]

    def summary(self, viewers: int) -> dict[str, Any]:
        """The real triggers against none (top level, as before the reference
        existed), the reference against none (``notify_only``), and what the
        real triggers cost beyond the reference."""
        out: dict[str, Any] = {"viewers": viewers}
        out.update(self._compare(SSE, "with_triggers"))
        out["notify_only"] = self._compare(NOTIFY, "notify_only")
        beyond = self.ratios(SSE, NOTIFY)
        out["cost_fraction_beyond_notify"] = round(1 - statistics.median(beyond), 4)
        out["ratio_beyond_notify_spread"] = _spread(beyond)
        return out

    def _compare(self, config: str, name: str) -> dict[str, Any]:
        """``config`` against ``none``: rates, the median ratio and its spread,
        and the backend's CPU per update."""
        without = [s[NONE] for s in self.sets]
        with_ = [s[config] for s in self.sets]
        ratios = self.ratios(config)
        ratio = statistics.median(ratios)
        out: dict[str, Any] = {
            # Medians of the rounds' rates; the ratio is the median of the
            # sets' ratios, not the ratio of these two.
            "updates_per_second_without_triggers": round(
                statistics.median(r.rate for r in without), 1),
            f"updates_per_second_{name}": round(statistics.median(r.rate for r in with_), 1),
            "ratio": round(ratio, 4),
            "cost_fraction": round(1 - ratio, 4),
            "sets": len(ratios),
            "ratio_spread": _spread(ratios),
        }
        keys = ("backend_cpu_us_per_update_without_triggers",
                f"backend_cpu_us_per_update_{name}", "backend_cpu_us_added_per_update",
                "backend_cpu_overhead", "backend_cpu_ratio_spread",
                "cost_fraction_from_backend_cpu")
        cpu_without = cpu_per_update(without)
        cpu_with = cpu_per_update(with_)
        if cpu_without is None or cpu_with is None:
            out.update(dict.fromkeys(keys))
            return out
        added = cpu_with - cpu_without
        # Each set's CPU per update, with over without.
        cpu_ratios = [b.cpu_seconds / b.updates / (a.cpu_seconds / a.updates)
                      for a, b in zip(without, with_, strict=True)
                      if a.cpu_seconds and b.cpu_seconds]
        # The client waits for every UPDATE, so the backend's added CPU time
        # adds to each update's wall time (median round without): the
        # throughput cost it predicts, which is far less noisy than
        # cost_fraction (the backend is only part of an update's time), and
        # blind to what the notification costs other processes.
        wall_us = 1e6 / statistics.median(r.rate for r in without)
        out.update(zip(keys, (
            round(cpu_without, 2), round(cpu_with, 2), round(added, 2),
            round(added / cpu_without, 4), _spread(cpu_ratios) if cpu_ratios else None,
            round(added / (wall_us + added), 4)), strict=True))
        return out


def cpu_per_update(rounds: list[Round]) -> float | None:
    """Backend CPU microseconds per update over ``rounds`` (all of them measured)."""
    if not rounds or any(r.cpu_seconds is None for r in rounds):
        return None
    cpu = sum(r.cpu_seconds or 0.0 for r in rounds)
    updates = sum(r.updates for r in rounds)
    return cpu / updates * 1e6 if cpu > 0 else None


def _spread(values: list[float]) -> dict[str, float]:
    """min, quartiles and max of ``values``, rounded."""
    ordered = sorted(values)
    if len(ordered) >= 2:
        q1, q2, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q2 = q3 = ordered[0]
    return {"min": round(ordered[0], 4), "q1": round(q1, 4), "median": round(q2, 4),
            "q3": round(q3, 4), "max": round(ordered[-1], 4)}


def run_json(viewers: int, config: str, repeat: int, rounds: list[Round]) -> dict[str, Any]:
    """A run: one repeat's rounds of one configuration, added up."""
    updates = sum(r.updates for r in rounds)
    seconds = sum(r.seconds for r in rounds)
    counts = [r.notifications for r in rounds]
    cpu = cpu_per_update(rounds)
    return {"viewers": viewers, "config": config, "repeat": repeat, "rounds": len(rounds),
            "updates": updates, "seconds": round(seconds, 4),
            "updates_per_second": round(updates / seconds, 1),
            "backend_cpu_us_per_update": None if cpu is None else round(cpu, 2),
            "notifications": None if None in counts else sum(c or 0 for c in counts)}
