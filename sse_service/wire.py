"""Server-Sent Events on the wire: encode once, frame once, write many times.

An :class:`Event` is an immutable tuple holding its bytes in both framings a
stream may need: ``wire`` for a close-delimited HTTP/1.0 body and ``chunk``
for an HTTP/1.1 chunked body. The hub writes the same object to every
recipient. (A tuple of strings and bytes, unlike an instance of a class, is
untracked by Python's cycle collector, so a history full of events costs the
garbage collector nothing.)

Field injection is impossible by construction: names and ids are checked
against a strict alphabet, and ``data`` is compact JSON, whose encoder escapes
every CR and LF inside strings, so it is always exactly one ``data:`` line.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")
ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")


def dumps_bytes(data: Any) -> bytes:
    """Compact UTF-8 JSON for a ``data:`` line (no raw line breaks by construction)."""
    return orjson.dumps(data)


def dumps(data: Any) -> str:
    """:func:`dumps_bytes` as text, for the service's own control events."""
    return orjson.dumps(data).decode("utf-8")


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


class Event(NamedTuple):
    """A named event with a JSON payload and an id, encoded once."""

    id: str
    name: str
    wire: bytes  # the SSE block
    chunk: bytes  # the same, framed as one HTTP/1.1 chunk
    sent_at: float | None = None  # epoch seconds the sender stamped, if any

    @classmethod
    def build(cls, id: str, name: str, data: bytes, sent_at: float | None = None) -> Event:
        """Encode an event whose ``id`` and ``name`` match :data:`ID_RE`/:data:`NAME_RE`
        and whose ``data`` is compact JSON (the caller has checked all three)."""
        wire = b"id: %b\nevent: %b\ndata: %b\n\n" % (id.encode(), name.encode(), data)
        return cls(id, name, wire, b"%x\r\n%b\r\n" % (len(wire), wire), sent_at)

    def framed(self, chunked: bool) -> bytes:
        return self.chunk if chunked else self.wire


def utc_timestamp() -> str:
    """ISO-8601 UTC with milliseconds, e.g. ``2026-11-28T07:16:23.512Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ping(id: str | None) -> bytes:
    """The keepalive, a real event so that the frontend can see it (``sync:ping``)."""
    return encode(id=id, name="sync:ping", data=dumps({"timestamp": utc_timestamp()}))
