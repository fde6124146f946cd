"""Resume decisions of the history window: exact replay or an explicit reset."""

from __future__ import annotations

from sse_service.events import Event, dumps_bytes
from sse_service.history import History, Reset, Resume


def ev(i: int) -> Event:
    return Event.build(str(i), "items:updated", dumps_bytes({"n": i}))


def ids(outcome: Resume | Reset) -> list[str]:
    assert isinstance(outcome, Resume), outcome
    return [block.split(b"\n", 1)[0].removeprefix(b"id: ").decode() for block in outcome.blocks]


def test_resume_replays_only_the_users_missed_events() -> None:
    h = History(window=100, per_user=10, max_age=60)
    h.record(ev(1), ["a", "b"], 0)
    h.record(ev(2), ["b"], 0)
    h.record(ev(3), ["a"], 0)
    h.record(ev(4), ["a", "b"], 0)
    assert ids(h.resume("a", "1")) == ["3", "4"]
    assert ids(h.resume("b", "1")) == ["2", "4"]
    assert ids(h.resume("a", "4")) == []
    # A resume point may be any notification's id, not only the user's own.
    assert ids(h.resume("a", "2")) == ["3", "4"]
    assert ids(h.resume("c", "1")) == []


def test_unknown_id_resets() -> None:
    h = History(window=100, per_user=10, max_age=60)
    h.record(ev(1), ["a"], 0)
    assert h.resume("a", "999") == Reset("unknown_last_event_id")


def test_window_eviction_resets() -> None:
    h = History(window=3, per_user=10, max_age=60)
    for i in range(1, 6):
        h.record(ev(i), ["a"], 0)
    assert h.resume("a", "1") == Reset("unknown_last_event_id")
    assert h.resume("a", "2") == Reset("unknown_last_event_id")
    assert ids(h.resume("a", "3")) == ["4", "5"]


def test_per_user_truncation_resets_instead_of_skipping() -> None:
    h = History(window=100, per_user=2, max_age=60)
    for i in range(1, 5):
        h.record(ev(i), ["a"], 0)
    h.record(ev(5), ["b"], 0)
    assert h.resume("a", "1") == Reset("history_truncated")
    assert h.resume("a", "2") == Reset("history_truncated")  # cannot tell: be safe
    assert ids(h.resume("a", "3")) == ["4"]
    assert ids(h.resume("a", "5")) == []


def test_age_expiry() -> None:
    h = History(window=100, per_user=10, max_age=10)
    h.record(ev(1), ["a"], 0)
    h.record(ev(2), ["a"], 5)
    h.expire(12)
    assert h.resume("a", "1") == Reset("unknown_last_event_id")
    assert ids(h.resume("a", "2")) == []
    h.expire(100)
    assert len(h) == 0
    assert h.resume("a", "2") == Reset("unknown_last_event_id")


def test_clear_after_a_gap_makes_every_old_id_reset() -> None:
    h = History(window=100, per_user=10, max_age=60)
    h.record(ev(1), ["a"], 0)
    h.clear()
    assert h.resume_point is None
    marker = h.mark(0)
    h.record(ev(2), ["a"], 0)
    assert h.resume("a", "1") == Reset("unknown_last_event_id")
    assert ids(h.resume("a", marker)) == ["2"]
    assert h.resume_point == marker


def test_one_entry_is_shared_by_all_recipients() -> None:
    h = History(window=100, per_user=10, max_age=60)
    h.record(ev(1), ["a", "b"], 0)
    assert h._users["a"][0] is h._users["b"][0]


def test_history_is_invisible_to_the_cycle_collector() -> None:
    import gc

    h = History(window=100, per_user=10, max_age=60)
    h.record(ev(1), ["a", "b"], 0)
    gc.collect()
    assert not gc.is_tracked(h._users["a"][0])
    assert not gc.is_tracked(h._order[0])


def test_expire_drops_idle_users() -> None:
    h = History(window=100, per_user=10, max_age=10)
    for i in range(50):
        h.record(ev(i), [f"user{i}"], 0)
    h.expire(20)
    assert h._users == {}


def test_markers_move_a_quiet_stream_forward_never_back() -> None:
    h = History(window=100, per_user=10, max_age=60)
    h.record(ev(1), ["a"], 0)
    m1 = h.mark(0)
    h.record(ev(2), ["b"], 0)
    # a resumed at 1: nothing missed, and m1 (newer than 1) becomes its resume point.
    outcome = h.resume("a", "1")
    assert isinstance(outcome, Resume) and outcome.blocks == [] and outcome.resume_point == m1
    h.record(ev(3), ["a"], 0)
    # a resumed at 1 now misses 3, which is newer than m1: no marker after it.
    outcome = h.resume("a", "1")
    assert ids(outcome) == ["3"] and isinstance(outcome, Resume)
    assert outcome.resume_point is None
    m2 = h.mark(0)
    outcome = h.resume("a", "3")
    assert isinstance(outcome, Resume) and outcome.resume_point == m2


def test_the_resume_point_does_not_follow_other_users_activity() -> None:
    """A wishlist owner must not learn, even from an id, that somebody marked a gift."""
    h = History(window=100, per_user=10, max_age=60)
    m = h.mark(0)
    h.record(ev(1), ["viewer"], 0)  # the viewer's marks:updated
    assert h.resume_point == m


def test_local_ids_are_unique_per_instance() -> None:
    a = History(window=10, per_user=1, max_age=1)
    b = History(window=10, per_user=1, max_age=1)
    assert a.local_id() != a.local_id()
    assert a.local_id().split("-")[0] != b.local_id().split("-")[0]
    a.record(ev(1), ["x"], 0)
    assert a.knows("1") and not b.knows("1")
