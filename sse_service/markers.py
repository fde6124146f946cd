"""Markers: resume points that carry no event.

A stream needs a resume point even when it received no event: at connect, on
every ``sync:ping`` and with a ``sync:reset``. A marker names a position in
this instance's notification sequence ("everything up to here was seen") and
the history's generation (every gap ends one), so a client that resumes from
it gets exactly what came after, or a reset once that is unknowable.

Markers are not stored anywhere: the position travels inside the id, masked
under a random per-marker nonce and authenticated with a key this instance
draws at start. So they cost no memory however many streams connect, they
never leave a window (the history decides, from the position, whether it
still reaches back that far), and a forged or foreign one is simply unknown.

Why a marker reveals nothing about other users' activity (a wishlist owner
must not see, even as a changed id, that somebody marked a gift): every
marker is made fresh, with a new random nonce, for the occasion that sends
it (a connect, a keepalive tick, a reset), so every id differs from every
other whether or not anything happened in between; the position and
generation inside cannot be read without the key, and an id's length and
alphabet are always the same. No counter of anything shows. What a client
can still observe is whether a resume is exact or a reset, which depends only
on the window's size and age, shared by all users alike.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

_NONCE = 8
_PLAIN = 12  # generation (4 bytes) and position (8 bytes), big-endian
_TAG = 7
_RAW = _NONCE + _PLAIN + _TAG  # 27 bytes: 36 base64url characters, no padding


class MarkerCodec:
    """Makes and reads this instance's markers (ids ``<prefix>-m<36 characters>``)."""

    __slots__ = ("_key", "_prefix")

    def __init__(self, prefix: str) -> None:
        self._key = secrets.token_bytes(32)  # per process: markers are local anyway
        self._prefix = prefix + "-m"

    def make(self, generation: int, position: int) -> str:
        """A fresh marker for ``position`` in ``generation`` (never the same id twice)."""
        nonce = secrets.token_bytes(_NONCE)
        plain = (generation & 0xFFFFFFFF).to_bytes(4, "big") + position.to_bytes(8, "big")
        raw = nonce + _xor(plain, self._mac(b"m" + nonce, _PLAIN)) \
            + self._mac(b"t" + nonce + plain, _TAG)
        return self._prefix + base64.urlsafe_b64encode(raw).decode("ascii")

    def read(self, marker: str) -> tuple[int, int] | None:
        """``(generation, position)`` of a marker made here; None for anything else."""
        if not marker.startswith(self._prefix):
            return None
        text = marker[len(self._prefix):]
        try:
            raw = base64.urlsafe_b64decode(text)
        except (binascii.Error, ValueError):
            return None
        # The decoder skips foreign characters: insist on the one canonical spelling.
        if len(raw) != _RAW or base64.urlsafe_b64encode(raw).decode("ascii") != text:
            return None
        nonce, masked, tag = raw[:_NONCE], raw[_NONCE:_NONCE + _PLAIN], raw[_NONCE + _PLAIN:]
        plain = _xor(masked, self._mac(b"m" + nonce, _PLAIN))
        if not hmac.compare_digest(tag, self._mac(b"t" + nonce + plain, _TAG)):
            return None
        return int.from_bytes(plain[:4], "big"), int.from_bytes(plain[4:], "big")

    def _mac(self, data: bytes, size: int) -> bytes:
        return hashlib.blake2b(data, key=self._key, digest_size=size).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")
