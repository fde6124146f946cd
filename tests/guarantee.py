"""The delivery guarantee, as a check over what one client received."""

from __future__ import annotations

from tests.sseclient import SSE


def check_stream(timeline: list[SSE], sent: list[str], event: str = "items:updated") -> None:
    """Every id in ``sent`` (the user's events, in notification order) arrived once and
    in order, or a ``sync:reset`` in ``timeline`` stands where it would have been."""
    order = {eid: i for i, eid in enumerate(sent)}
    got = [e.id for e in timeline if e.event == event]
    assert all(g in order for g in got), "received an event that was not addressed to it"
    positions = [order[g] for g in got if g is not None]
    assert positions == sorted(set(positions)), "duplicated or reordered"
    for m in sorted(set(range(len(sent))) - set(positions)):
        assert reset_covers(timeline, order, m, event), \
            f"event #{m} of {len(sent)} lost without sync:reset"


def reset_covers(timeline: list[SSE], order: dict[str, int], m: int, event: str) -> bool:
    """A sync:reset sits where event ``m`` would have been in the received stream."""
    for idx, e in enumerate(timeline):
        if e.event != "sync:reset":
            continue
        before = [order[x.id] for x in timeline[:idx] if x.event == event and x.id]
        after = [order[x.id] for x in timeline[idx + 1:] if x.event == event and x.id]
        if (not before or max(before) < m) and (not after or min(after) > m):
            return True
    return False
