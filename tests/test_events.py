"""Event encoding and notification parsing: the pure core, no server needed."""

from __future__ import annotations

import json
import time

import pytest

from sse_service.notification import InvalidNotification, parse
from sse_service.wire import Event, dumps, dumps_bytes, encode, frame


def test_event_is_encoded_once_in_both_framings() -> None:
    ev = Event.build("42", "items:updated", dumps_bytes({"id": "a", "wishlist_id": "b"}))
    assert ev.wire == b'id: 42\nevent: items:updated\ndata: {"id":"a","wishlist_id":"b"}\n\n'
    assert ev.chunk == b"%x\r\n" % len(ev.wire) + ev.wire + b"\r\n"
    assert ev.framed(True) is ev.chunk and ev.framed(False) is ev.wire


def test_frame() -> None:
    assert frame(b"abc", False) == b"abc"
    assert frame(b"x" * 26, True) == b"1a\r\n" + b"x" * 26 + b"\r\n"


@pytest.mark.parametrize("kwargs", [
    {"name": "items:updated\ndata: evil"},
    {"name": "a\rb"},
    {"name": ""},
    {"name": "x" * 65},
    {"id": "1\nevent: x"},
    {"id": "1\x00"},
    {"data": "one\ntwo"},
    {"comment": "a\nb"},
])
def test_encode_refuses_field_injection(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        encode(**kwargs)  # type: ignore[arg-type]


def test_data_with_line_breaks_stays_one_line() -> None:
    data = dumps({"title": "a\nevent: evil\r\n\r\ndata: x", "u": "\u2028"})
    block = encode(name="items:resolved", data=data)
    assert block.count(b"\n") == 3  # event, data, blank line
    assert json.loads(block.split(b"data: ", 1)[1].rstrip(b"\n")) == {
        "title": "a\nevent: evil\r\n\r\ndata: x", "u": "\u2028"}


def good(**over: object) -> str:
    obj: dict[str, object] = {"event": "items:updated", "users": ["u1"], "data": {"id": "i"}}
    obj.update(over)
    return json.dumps(obj)


def test_parse_valid_payload() -> None:
    note = parse(good(id=7, ts=1764314183.5, users=["u1", "u2", "u1"]))
    assert note.event == "items:updated"
    assert note.users == ("u1", "u2")  # deduplicated, order kept
    assert note.data == b'{"id":"i"}'
    assert note.id == "7" and note.sent_at == 1764314183.5


def test_parse_manual_psql_example() -> None:
    payload = ('{"event":"items:resolved","users":["0b5e9c3e-1111-4b6a-9a57-4b2f7f0e8c11"],'
               '"data":{"id":"x","wishlist_id":"y","status":"resolved","title":"iPhone 15"}}')
    note = parse(payload)
    assert note.id is None and note.users == ("0b5e9c3e-1111-4b6a-9a57-4b2f7f0e8c11",)


@pytest.mark.parametrize(("payload", "reason"), [
    ("not json", "not_json"),
    ("", "not_json"),
    ("[" * 5000 + "]" * 5000, "too_large"),
    ("[" * 3000 + "]" * 3000, "not_json"),  # deeper than the parser allows
    ('{"event": NaN}', "not_json"),
    ("[1, 2]", "not_object"),
    ('"text"', "not_object"),
    ("null", "not_object"),
    (good(event=None), "bad_event"),
    (json.dumps({"users": ["u"], "data": {}}), "bad_event"),
    (good(event=5), "bad_event"),
    (good(event="items:updated\ndata: {}"), "bad_event"),
    (good(event="items:updated\r\nid: 9"), "bad_event"),
    (good(event="a b"), "bad_event"),
    (good(event=""), "bad_event"),
    (json.dumps({"event": "x", "data": {}}), "bad_users"),
    (good(users=[]), "bad_users"),
    (good(users="u1"), "bad_users"),
    (good(users=[1]), "bad_users"),
    (good(users=[None]), "bad_users"),
    (good(users=[["u1"]]), "bad_users"),
    (good(users=[""]), "bad_users"),
    (good(users=["x" * 129]), "bad_users"),
    (good(users=[f"u{n}" for n in range(257)]), "too_many_users"),
    (json.dumps({"event": "x", "users": ["u"]}), "bad_data"),
    (good(data="text"), "bad_data"),
    (good(data=[1]), "bad_data"),
    (good(data=None), "bad_data"),
    (good(id=-1), "bad_id"),
    (good(id=True), "bad_id"),
    (good(id="1\n2"), "bad_id"),
    (good(id=1.5), "bad_id"),
    (good(id={"a": 1}), "bad_id"),
    ("x" * 8001, "too_large"),
    (good(event="sync:reset"), "reserved_event"),
    (good(event="auth:expired"), "reserved_event"),
    (good(event="sync:closed"), "reserved_event"),
    (good(event="SYNC:reset"), "reserved_event"),
    (good(event="Sync:Closed"), "reserved_event"),
    (good(event="AUTH:expired"), "reserved_event"),
    (good(event="error"), "reserved_event"),
    (good(event="ERROR"), "reserved_event"),
    (good(event="message"), "reserved_event"),
    (good(event="Message"), "reserved_event"),
    # Deeper than the encoder allows, shallower than the decoder's limit.
    (good(data={}).replace("{}", '{"a":' * 300 + "1" + "}" * 300), "bad_data"),
    (good(data={}).replace("{}", '{"a":' + "[" * 1000 + "]" * 1000 + "}"), "bad_data"),
])
def test_parse_rejects_hostile_payloads(payload: str, reason: str) -> None:
    with pytest.raises(InvalidNotification) as info:
        parse(payload)
    assert info.value.reason == reason


def test_bad_ts_is_ignored_not_fatal() -> None:
    assert parse(good(ts="yesterday")).sent_at is None
    assert parse(good(ts=True)).sent_at is None


@pytest.mark.parametrize("ts", [-1e308, 1e308, -1, 0, 1.5, 1577836799.9,
                                "now+3600", 123456789012345678901234567890])
def test_implausible_ts_is_ignored(ts: float | str) -> None:
    """Before 2020 or more than five minutes ahead: the event is kept, its ts ignored."""
    value = time.time() + 3600 if ts == "now+3600" else ts
    note = parse(good(ts=value))
    assert note.event == "items:updated" and note.sent_at is None


@pytest.mark.parametrize("ahead", [-86400.0, -1.0, 0.0, 60.0, 290.0])
def test_plausible_ts_is_kept(ahead: float) -> None:
    ts = time.time() + ahead
    assert parse(good(ts=ts)).sent_at == ts
    assert parse(good(ts=int(ts))).sent_at == int(ts)


def test_public_ids_are_opaque_and_agree_across_instances() -> None:
    from sse_service.ids import IdCodec

    a, b = IdCodec("k" * 32), IdCodec("k" * 32)
    assert a.public("41") == b.public("41")  # two instances, one key
    assert a.public("41") != IdCodec("x" * 32).public("41")
    ids = [int(a.public(str(n))) for n in range(1000, 1010)]
    assert len(set(ids)) == 10 and ids != sorted(ids)  # no visible order or distance
    assert all(0 <= i < 2**56 for i in ids)
    # Fixed forever: instances of different versions share ids during a rolling
    # upgrade, and clients keep theirs across it (the values of version 0.1.0).
    key = "test-secret-test-secret-test-secret-0123456789"
    assert IdCodec(key).public("1") == "50524276311468725"
    assert IdCodec(key).public("987654321") == "34098744281093389"
