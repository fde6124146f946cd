"""Admission by sender role (``senders.Senders``), against an in-memory directory
of backends standing in for ``pg_stat_activity``: order, holding, bounds, and
what becomes a gap. The real look-up runs in tests/test_hostile_db.py."""

from __future__ import annotations

import asyncio

from sse_service.senders import Senders
from sse_service.stats import Stats


class Directory:
    """pid -> (role, writes); each look-up waits until the test lets it answer."""

    def __init__(self, backends: dict[int, tuple[str, bool]]) -> None:
        self.backends = backends
        self.asked: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def lookup(self, pids: list[int]) -> dict[int, tuple[str, bool]]:
        self.asked.append(pids)
        await self.gate.wait()
        if self.fail:
            raise ConnectionError("gone")
        return {pid: self.backends[pid] for pid in pids if pid in self.backends}


def make(roles: tuple[str, ...], directory: Directory, limit: int = 100
         ) -> tuple[Senders, list[str], list[str], Stats]:
    got: list[str] = []
    gaps: list[str] = []
    stats = Stats()
    senders = Senders(roles=roles, enqueue=got.append, gap=gaps.append, stats=stats, limit=limit)
    senders.attach(directory.lookup)
    return senders, got, gaps, stats


async def settle(senders: Senders) -> None:
    async with asyncio.timeout(5):
        while senders.held:
            await asyncio.sleep(0)


async def test_unknown_senders_are_held_and_nothing_overtakes_them() -> None:
    d = Directory({1: ("api", True), 2: ("api", True), 3: ("intruder", False)})
    senders, got, gaps, stats = make(("@writers",), d)
    d.gate.clear()
    senders.offer(1, "a")
    senders.offer(3, "evil")
    senders.offer(1, "b")
    await asyncio.sleep(0)  # the look-up of 1 and 3 is under way
    senders.offer(2, "c")  # arrives meanwhile: asked in the next round
    assert got == [] and senders.held == 4
    d.gate.set()
    await settle(senders)
    assert got == ["a", "b", "c"]
    assert d.asked == [[1, 3], [2]]
    assert gaps == [] and stats.notifications_rejected["sender_not_allowed"] == 1
    senders.offer(2, "d")  # known now: straight through, no look-up
    senders.offer(3, "evil")
    assert got[-1] == "d" and len(d.asked) == 2
    assert stats.notifications_rejected["sender_not_allowed"] == 2


async def test_a_sender_gone_before_its_lookup_is_a_gap_not_a_delivery() -> None:
    d = Directory({1: ("api", True)})
    senders, got, gaps, stats = make(("api",), d)
    senders.offer(9, "from a backend that has exited")
    senders.offer(1, "a")
    await settle(senders)
    assert got == ["a"]
    assert gaps == ["sender_unknown"]
    assert stats.notifications_rejected["sender_unknown"] == 1


async def test_names_and_writers_combine() -> None:
    d = Directory({1: ("ops", False), 2: ("api", True), 3: ("reader", False)})
    senders, got, _gaps, _stats = make(("@writers", "ops"), d)
    for pid in (1, 2, 3):
        senders.offer(pid, str(pid))
    await settle(senders)
    assert got == ["1", "2"]
    senders_by_name, got_by_name, _, _ = make(("ops",), d)
    for pid in (1, 2, 3):
        senders_by_name.offer(pid, str(pid))
    await settle(senders_by_name)
    assert got_by_name == ["1"]


async def test_holding_is_bounded_and_a_lost_admitted_event_is_a_gap() -> None:
    d = Directory({1: ("api", True), 2: ("api", True)})
    senders, got, gaps, stats = make(("api",), d, limit=16)  # at most 2 of one backend
    d.gate.clear()
    for n in range(5):
        senders.offer(1, str(n))
    senders.offer(2, "other")  # room is left for other backends
    assert senders.held == 3 and gaps == []
    d.gate.set()
    await settle(senders)
    assert got == ["0", "1", "other"]  # the held ones, in order; then the gap for the rest
    assert gaps == ["hold_overflow"]
    assert stats.notifications_rejected["hold_overflow"] == 3


async def test_an_intruders_flood_costs_neither_memory_nor_a_reset() -> None:
    d = Directory({1: ("api", True), 6: ("intruder", False)})
    senders, got, gaps, stats = make(("api",), d, limit=16)
    d.gate.clear()
    for n in range(1000):  # one statement of junk from a backend not seen before
        senders.offer(6, f"junk {n}")
    senders.offer(1, "real")  # the core API, while the intruder's role is looked up
    assert senders.held == 3
    d.gate.set()
    await settle(senders)
    assert got == ["real"] and gaps == []
    assert stats.notifications_rejected["sender_not_allowed"] == 1000


async def test_a_failed_lookup_is_a_gap() -> None:
    d = Directory({1: ("api", True)})
    senders, got, gaps, _stats = make(("api",), d)
    d.fail = True
    senders.offer(1, "a")
    await settle(senders)
    assert got == [] and gaps == ["sender_unknown"]


async def test_refresh_forgets_exited_and_demoted_backends() -> None:
    d = Directory({1: ("api", True), 2: ("api", True)})
    senders, got, _gaps, _stats = make(("@writers",), d)
    senders.offer(1, "a")
    senders.offer(2, "b")
    await settle(senders)
    del d.backends[1]  # exited (its pid may come back as somebody else's)
    d.backends[2] = ("api", False)  # its write privilege revoked
    await senders.refresh()
    d.backends[1] = ("intruder", False)  # the pid reused
    senders.offer(1, "c")
    senders.offer(2, "d")
    await settle(senders)
    assert got == ["a", "b"]


async def test_detach_drops_what_is_held() -> None:
    d = Directory({1: ("api", True)})
    senders, got, gaps, _stats = make(("api",), d)
    d.gate.clear()
    senders.offer(1, "a")
    senders.detach()  # the LISTEN connection's recovery resets everybody anyway
    d.gate.set()
    await asyncio.sleep(0.01)
    assert senders.held == 0 and got == [] and gaps == []


async def test_open_policy_passes_everything_without_lookups() -> None:
    d = Directory({})
    senders, got, _gaps, _stats = make((), d)
    senders.offer(1, "a")
    assert got == ["a"] and d.asked == [] and senders.open
