"""Server-Sent Events on the wire: encode once, frame once, write many times.

An :class:`Event` is immutable and holds its bytes in both framings a stream
may need: ``wire`` for a close-delimited HTTP/1.0 body and ``chunk`` for an
HTTP/1.1 chunked body. The hub writes the same object to every recipient.

Field injection is impossible by construction: names and ids are checked
against a strict alphabet, and ``data`` is compact JSON, whose encoder escapes
every CR and LF inside strings, so it is always exactly one ``data:`` line.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")
ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")

_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def dumps(data: Any) -> str:
    """Compact JSON for a ``data:`` line (no raw line breaks by construction)."""
    return _compact(data)


def frame(payload: bytes, chunked: bool) -> bytes:
    """Wrap ``payload`` in HTTP/1.1 chunked framing when ``chunked``."""
    if not chunked:
        return payload
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def encode(*, name: str | None = None, data: str | None = None, id: str | None = None,
           retry: int | None = None, comment: str | None = None) -> bytes:
    """One SSE message block. Raises ValueError on anything that could inject fields."""
    parts: list[str] = []
    if comment is not None:
        if "\n" in comment or "\r" in comment:
            raise ValueError("comment must be one line")
        parts.append(f": {comment}\n")
    if retry is not None:
        parts.append(f"retry: {int(retry)}\n")
    if id is not None:
        if not ID_RE.match(id):
            raise ValueError(f"bad event id {id!r}")
        parts.append(f"id: {id}\n")
    if name is not None:
        if not NAME_RE.match(name):
            raise ValueError(f"bad event name {name!r}")
        parts.append(f"event: {name}\n")
    if data is not None:
        if "\n" in data or "\r" in data:
            raise ValueError("data must be one line")
        parts.append(f"data: {data}\n")
    parts.append("\n")
    return "".join(parts).encode("utf-8")


class Event:
    """A named event with a JSON payload and an id, encoded once."""

    __slots__ = ("chunk", "data", "id", "name", "received_at", "sent_at", "wire")

    def __init__(self, id: str, name: str, data: str, *,
                 received_at: float = 0.0, sent_at: float | None = None) -> None:
        self.id = id
        self.name = name
        self.data = data
        self.wire = encode(id=id, name=name, data=data)
        self.chunk = frame(self.wire, True)
        self.received_at = received_at  # loop.time() when the notification arrived
        self.sent_at = sent_at  # wall-clock time the trigger fired, if the payload says

    def framed(self, chunked: bool) -> bytes:
        return self.chunk if chunked else self.wire

    def __repr__(self) -> str:
        return f"Event(id={self.id!r}, name={self.name!r})"


def utc_timestamp() -> str:
    """ISO-8601 UTC with milliseconds, e.g. ``2026-11-28T07:16:23.512Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ping(id: str | None) -> bytes:
    """The keepalive, a real event so that the frontend can see it (``sync:ping``)."""
    return encode(id=id, name="sync:ping", data=dumps({"timestamp": utc_timestamp()}))
