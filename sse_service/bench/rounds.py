"""``bench triggers``' timed rounds, paired without/with triggers, and their figures."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Round:
    """One timed round: ``updates`` UPDATEs in one configuration."""

    viewers: int
    repeat: int
    pair: int
    triggers: bool
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
        return {"viewers": self.viewers, "repeat": self.repeat, "pair": self.pair,
                "triggers": self.triggers, "updates": self.updates,
                "seconds": round(self.seconds, 4), "updates_per_second": round(self.rate, 1),
                "backend_cpu_us_per_update": None if cpu_us is None else round(cpu_us, 2),
                "notifications": self.notifications}


@dataclass
class Pairs:
    """The rounds of one viewer count, as (without, with) pairs."""

    pairs: list[tuple[Round, Round]] = field(default_factory=list)

    def summary(self, viewers: int) -> dict[str, Any]:
        without = [a for a, _ in self.pairs]
        with_ = [b for _, b in self.pairs]
        ratios = [b.rate / a.rate for a, b in self.pairs]
        ratio = statistics.median(ratios)
        out: dict[str, Any] = {
            "viewers": viewers,
            # Medians of the rounds' rates; the ratio is the median of the
            # pairs' ratios, not the ratio of these two.
            "updates_per_second_without_triggers": round(
                statistics.median(r.rate for r in without), 1),
            "updates_per_second_with_triggers": round(statistics.median(r.rate for r in with_), 1),
            "ratio": round(ratio, 4),
            "cost_fraction": round(1 - ratio, 4),
            "pairs": len(ratios),
            "ratio_spread": _spread(ratios),
        }
        cpu_without = cpu_per_update(without)
        cpu_with = cpu_per_update(with_)
        if cpu_without is not None and cpu_with is not None:
            added = cpu_with - cpu_without
            # Each pair's CPU per update, with over without.
            cpu_ratios = [b.cpu_seconds / b.updates / (a.cpu_seconds / a.updates)
                          for a, b in self.pairs if a.cpu_seconds and b.cpu_seconds]
            # The client waits for every UPDATE, so the backend's added CPU
            # time adds to each update's wall time (median round without):
            # the throughput cost it predicts, which is far less noisy than
            # cost_fraction (the backend is only part of an update's time).
            wall_us = 1e6 / statistics.median(r.rate for r in without)
            out.update({
                "backend_cpu_us_per_update_without_triggers": round(cpu_without, 2),
                "backend_cpu_us_per_update_with_triggers": round(cpu_with, 2),
                "backend_cpu_us_added_per_update": round(added, 2),
                "backend_cpu_overhead": round(added / cpu_without, 4),
                "backend_cpu_ratio_spread": _spread(cpu_ratios) if cpu_ratios else None,
                "cost_fraction_from_backend_cpu": round(added / (wall_us + added), 4),
            })
        else:
            out.update(dict.fromkeys((
                "backend_cpu_us_per_update_without_triggers",
                "backend_cpu_us_per_update_with_triggers", "backend_cpu_us_added_per_update",
                "backend_cpu_overhead", "backend_cpu_ratio_spread",
                "cost_fraction_from_backend_cpu")))
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


def run_json(viewers: int, on: bool, repeat: int, rounds: list[Round]) -> dict[str, Any]:
    """A run: one repeat's rounds of one configuration, added up."""
    updates = sum(r.updates for r in rounds)
    seconds = sum(r.seconds for r in rounds)
    counts = [r.notifications for r in rounds]
    cpu = cpu_per_update(rounds)
    return {"viewers": viewers, "triggers": on, "repeat": repeat, "rounds": len(rounds),
            "updates": updates, "seconds": round(seconds, 4),
            "updates_per_second": round(updates / seconds, 1),
            "backend_cpu_us_per_update": None if cpu is None else round(cpu, 2),
            "notifications": None if None in counts else sum(c or 0 for c in counts)}
