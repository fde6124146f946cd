"""Resume decisions of the history window: exact replay or an explicit reset."""

from __future__ import annotations

import json

from sse_service.history import History, Reset, Resume
from sse_service.wire import ID_RE, Event, dumps_bytes


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
    before = h.marker()
    h.clear()
    after = h.marker()  # the same position as `before`, but after the gap
    h.record(ev(2), ["a"], 0)
    assert h.resume("a", "1") == Reset("unknown_last_event_id")
    assert h.resume("a", before) == Reset("unknown_last_event_id")
    assert ids(h.resume("a", after)) == ["2"]


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


def blocks(data: bytes) -> list[dict[str, str]]:
    """The SSE blocks of ``data`` as {field: value} (the service writes LF only)."""
    out = []
    for block in data.decode().split("\n\n")[:-1]:
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append(fields)
    return out


def test_a_marker_resumes_exactly_while_the_window_reaches_back_to_it() -> None:
    h = History(window=3, per_user=10, max_age=60)
    m = h.marker()
    h.record(ev(1), ["a"], 0)
    h.record(ev(2), ["b"], 0)
    h.record(ev(3), ["a"], 0)
    assert ids(h.resume("a", m)) == ["1", "3"]
    h.record(ev(4), ["b"], 0)  # notification 1 leaves the window: m is unprovable
    assert h.resume("a", m) == Reset("unknown_last_event_id")


def test_a_quiet_marker_survives_age_expiry_when_nothing_happened() -> None:
    h = History(window=100, per_user=10, max_age=10)
    h.record(ev(1), ["a"], 0)
    m = h.marker()
    h.expire(100)
    assert ids(h.resume("a", m)) == []
    h.record(ev(2), ["a"], 100)
    assert ids(h.resume("a", m)) == ["2"]


def test_every_preamble_ends_with_a_resume_point_on_an_event_with_data() -> None:
    """Issue 12.1 and 12.2: however fast the window turns over, and right after a
    gap, a new stream gets an id, on a block that every parser dispatches."""
    h = History(window=5, per_user=10, max_age=60)
    for i in range(50):  # far more notifications than the window holds
        h.record(ev(i), ["other"], 0)
    h.clear()
    for last in (None, "", "bad id", "12345", h.marker()):
        pre = h.preamble("a", last)
        final = blocks(pre.blocks)[-1]
        assert final["event"] in ("sync:ping", "sync:reset") and final["data"]
        assert ID_RE.match(final["id"])
    h.record(ev(100), ["a"], 0)
    h.record(ev(101), ["b"], 0)
    first = blocks(h.preamble("a", None).blocks)
    assert [b["event"] for b in first] == ["sync:ping"]
    assert set(json.loads(first[0]["data"])) == {"timestamp"}
    h.record(ev(102), ["a"], 0)
    resumed = h.preamble("a", first[0]["id"])
    assert resumed.reset is None and resumed.replayed == 1
    got = blocks(resumed.blocks)
    assert [(b["event"], b.get("id")) for b in got[:1]] == [("items:updated", "102")]
    assert got[1]["event"] == "sync:ping"
    again = h.preamble("a", got[1]["id"])  # the marker after the replay: nothing twice
    assert again.reset is None and again.replayed == 0


def test_preamble_resets_say_why() -> None:
    h = History(window=5, per_user=10, max_age=60)
    for last, reason in (("bad id", "invalid_last_event_id"),
                         ("x" * 65, "invalid_last_event_id"),
                         ("999", "unknown_last_event_id")):
        pre = h.preamble("a", last)
        assert pre.reset == reason and pre.replayed == 0
        (block,) = blocks(pre.blocks)
        assert block["event"] == "sync:reset" and json.loads(block["data"]) == {"reason": reason}


def test_markers_carry_no_count_of_anything() -> None:
    """A wishlist owner must not learn, even from an id, that somebody marked a gift:
    every marker is new, of one length, whether or not anything happened."""
    h = History(window=100, per_user=10, max_age=60)
    quiet = [h.marker() for _ in range(50)]
    h.record(ev(1), ["viewer"], 0)  # the viewer's marks:updated
    busy = [h.marker() for _ in range(50)]
    markers = quiet + busy
    assert len(set(markers)) == len(markers)
    assert {len(m) for m in markers} == {len(markers[0])}
    assert all(ID_RE.match(m) and m.startswith(h.instance + "-m") for m in markers)


def test_foreign_and_forged_markers_are_unknown() -> None:
    a = History(window=100, per_user=10, max_age=60)
    b = History(window=100, per_user=10, max_age=60)
    m = a.marker()
    a.record(ev(1), ["u"], 0)
    assert ids(a.resume("u", m)) == ["1"]
    assert b.resume("u", m) == Reset("unknown_last_event_id")  # another instance's
    prefix, body = m[: len(a.instance) + 2], m[len(a.instance) + 2:]
    for forged in (prefix + body[:-1] + ("A" if body[-1] != "A" else "B"),
                   prefix + body[::-1], prefix + body[:-4], prefix + "=" + body[1:],
                   prefix + body[:10] + "." + body[11:], prefix, m + "A"):
        assert a.resume("u", forged) == Reset("unknown_last_event_id"), forged


def test_local_ids_are_unique_per_instance() -> None:
    a = History(window=10, per_user=1, max_age=1)
    b = History(window=10, per_user=1, max_age=1)
    assert a.local_id() != a.local_id()
    assert a.local_id().split("-")[0] != b.local_id().split("-")[0]
    assert len({a.local_id() for _ in range(100)}) == 100
    a.record(ev(1), ["x"], 0)
    assert a.knows("1") and not b.knows("1")


def test_the_number_of_users_is_bounded_and_an_evicted_users_resume_resets() -> None:
    """Notifications that name ever new users cannot grow the history without
    bound; a user whose list went must not resume "exactly" with nothing."""
    h = History(window=100, per_user=10, max_age=60, max_users=3)
    h.record(ev(1), ["a"], 0)
    h.record(ev(2), ["a", "b"], 0)
    h.record(ev(3), ["c"], 0)
    h.record(ev(4), ["d"], 0)  # a fourth user: a's list (the oldest) goes
    assert len(h._users) == 3
    assert h.resume("a", "1") == Reset("history_truncated")  # it held event 2
    # From before what was evicted, no list that starts later can be proven whole
    # (a reset where one was not needed, only once the bound was reached).
    assert h.resume("b", "1") == Reset("history_truncated")
    assert ids(h.resume("b", "2")) == []
    assert ids(h.resume("c", "2")) == ["3"]
    assert ids(h.resume("a", "2")) == []  # a missed nothing after 2
    h.record(ev(5), ["a"], 0)  # a again: a new list, from 5 on
    assert h.resume("a", "1") == Reset("history_truncated")
    assert ids(h.resume("a", "3")) == ["5"]  # after what the evicted list held
