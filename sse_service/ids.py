"""Event ids as clients see them: opaque, yet the same on every instance.

The triggers number their notifications from a database sequence, which every
instance receives alike, so a client can resume on any instance. Shown as
they are, those numbers would count everybody's activity between two of a
user's own events; a wishlist owner could watch the counter jump when a
friend marks a gift. So every id from a payload is shown as a keyed hash of
it: unique for practical purposes (56 bits), unrelated to its neighbours, and
identical on every instance that shares the key (derived from
``SSE_JWT_KEY``, which the instances share anyway).
"""

from __future__ import annotations

import hashlib

_CONTEXT = b"sse-service event ids v1"


class IdCodec:
    """Maps a payload's id to the id that goes on the wire."""

    __slots__ = ("_keyed",)

    def __init__(self, secret: str) -> None:
        key = hashlib.sha256(_CONTEXT + secret.encode("utf-8")).digest()
        # Keyed once; copying the keyed state is cheaper than keying every id.
        self._keyed = hashlib.blake2b(key=key, digest_size=7)

    def public(self, raw: str) -> str:
        """A decimal string below 2**56 (it fits a signed 64-bit integer)."""
        h = self._keyed.copy()
        h.update(raw.encode("utf-8"))
        return str(int.from_bytes(h.digest(), "big"))
