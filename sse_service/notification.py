"""Decode and validate one NOTIFY payload.

The payload is JSON ``{"event": NAME, "users": [id, ...], "data": {...}}``
with an optional ``"id"`` (the triggers put a sequence number there) and an
optional ``"ts"`` (epoch seconds at which the trigger fired, ignored unless
plausible). Anyone with
``NOTIFY`` rights on the database can send one, so everything is checked;
a bad payload raises :class:`InvalidNotification` with a short reason code
for the metrics and logs, and never reaches a stream.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import orjson

from sse_service.wire import ID_RE, NAME_RE, dumps_bytes

MAX_PAYLOAD_BYTES = 8000
# The service's own signals: a NOTIFY must not be able to tell clients to close
# (sync:closed, auth:expired) or to pull everything. Compared in lower case, so
# that no client that folds case (or a handler registered so) can be fooled.
RESERVED_PREFIXES = ("sync:", "auth:")
# "message" is what EventSource calls an event without a name, and an event named
# "error" would fire the browser's onerror handler: neither may come from a NOTIFY.
RESERVED_NAMES = frozenset({"message", "error"})
MAX_USER_ID_LENGTH = 128
# The triggers split an audience into notifications of at most ~200 users (the
# 8000-byte payload limit); more in one payload is not ours, and each recipient
# costs memory in the inbox and the history.
MAX_USERS = 256
# A "ts" outside these bounds (a clock gone wrong, or a hostile -1e308) would
# poison the latency histogram's sum until restart: it is ignored, the event kept.
EARLIEST_TS = 1_577_836_800.0  # 2020-01-01T00:00:00Z
MAX_TS_AHEAD = 300.0  # seconds a sender's clock may run ahead of ours
_NUMBERS = (int, float)  # what orjson makes of a JSON number


class InvalidNotification(ValueError):
    """A payload the service refuses; ``reason`` is a stable short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Notification(NamedTuple):
    """A valid payload. A tuple: built once per notification, on the hot path."""

    event: str
    users: tuple[str, ...]
    data: bytes  # compact UTF-8 JSON, safe for one data: line
    id: str | None = None
    sent_at: float | None = None


def parse(payload: str) -> Notification:
    """Validate ``payload``; raise :class:`InvalidNotification` if unusable."""
    if len(payload) > MAX_PAYLOAD_BYTES:  # characters ≤ bytes, so this is cheap and safe
        raise InvalidNotification("too_large", f"{len(payload)} characters")
    try:
        obj = orjson.loads(payload)  # strict JSON: no NaN, depth-limited
    except orjson.JSONDecodeError as exc:
        raise InvalidNotification("not_json", str(exc)[:80]) from None
    if not isinstance(obj, dict):
        raise InvalidNotification("not_object", f"got {type(obj).__name__}")

    event = obj.get("event")
    if not isinstance(event, str) or not NAME_RE.match(event):
        raise InvalidNotification("bad_event", "event must be a name of [A-Za-z0-9_.:-]{1,64}")
    folded = event.lower()
    if folded.startswith(RESERVED_PREFIXES) or folded in RESERVED_NAMES:
        raise InvalidNotification("reserved_event", f"{event!r} is reserved")

    users = obj.get("users")
    if not isinstance(users, list) or not users:
        raise InvalidNotification("bad_users", "users must be a non-empty list")
    if len(users) > MAX_USERS:
        raise InvalidNotification("too_many_users", f"at most {MAX_USERS} users")
    for user in users:
        if user.__class__ is not str or not 0 < len(user) <= MAX_USER_ID_LENGTH:
            raise InvalidNotification("bad_users", "each user must be a non-empty string")

    data = obj.get("data")
    if not isinstance(data, dict):
        raise InvalidNotification("bad_data", "data must be a JSON object")

    raw_id = obj.get("id")
    event_id: str | None
    if raw_id is None:
        event_id = None
    elif isinstance(raw_id, int) and not isinstance(raw_id, bool) and raw_id >= 0:
        event_id = str(raw_id)
    elif isinstance(raw_id, str) and ID_RE.match(raw_id):
        event_id = raw_id
    else:
        raise InvalidNotification("bad_id", "id must be a non-negative integer or [A-Za-z0-9_.:-]")

    ts = obj.get("ts")
    sent_at: float | None = None
    # Not a bool nor a str; orjson never yields NaN or an infinity.
    if ts.__class__ in _NUMBERS and EARLIEST_TS <= ts <= time.time() + MAX_TS_AHEAD:
        sent_at = float(ts)

    try:
        encoded = dumps_bytes(data)
    except orjson.JSONEncodeError:
        # The decoder accepts deeper nesting (1024 levels) than the encoder (254).
        raise InvalidNotification("bad_data", "data is nested too deeply") from None

    return Notification(
        event,
        # One delivery per user, order kept (the triggers never repeat one).
        (users[0],) if len(users) == 1 else tuple(dict.fromkeys(users)),
        encoded,
        event_id,
        sent_at,
    )
