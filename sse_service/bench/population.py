"""The benchmark's users: their rows in the core schema, and a token per stream."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

from sse_service.bench.common import BenchError, Conn
from sse_service.settings import Settings


async def create_rows(conn: Conn, users: int, fanout: int,
                      wishlists: int) -> tuple[list[str], list[str], list[list[int]]]:
    """Users, wishlists with one item each, and F-1 viewers per wishlist.

    Wishlist j is owned by user (j*F) % U and viewed by the next F-1 users.
    Returns (user ids, item ids, audience of each item as user indices).
    """
    user_ids = [str(uuid.uuid4()) for _ in range(users)]
    await conn.execute(
        "INSERT INTO users (id, email, name) "
        "SELECT u, u::text || '@bench.example', 'bench' FROM unnest($1::uuid[]) AS u",
        user_ids)
    audiences: list[list[int]] = []
    owners: list[str] = []
    wishlist_ids = [str(uuid.uuid4()) for _ in range(wishlists)]
    item_ids = [str(uuid.uuid4()) for _ in range(wishlists)]
    viewer_rows: tuple[list[str], list[str]] = ([], [])
    for j in range(wishlists):
        members = [(j * fanout + i) % users for i in range(fanout)]
        audiences.append(members)
        owners.append(user_ids[members[0]])
        for v in members[1:]:
            viewer_rows[0].append(user_ids[v])
            viewer_rows[1].append(wishlist_ids[j])
    await conn.execute(
        "INSERT INTO wishlists (id, user_id, name) "
        "SELECT w, o, 'bench' FROM unnest($1::uuid[], $2::uuid[]) AS x(w, o)",
        wishlist_ids, owners)
    await conn.execute(
        "INSERT INTO items (id, wishlist_id, title) "
        "SELECT i, w, 'bench item' FROM unnest($1::uuid[], $2::uuid[]) AS x(i, w)",
        item_ids, wishlist_ids)
    await conn.execute(
        "INSERT INTO shared_wishlist_bookmarks (user_id, wishlist_id, share_token) "
        "SELECT u, w, md5(u::text || w::text) FROM unnest($1::uuid[], $2::uuid[]) AS x(u, w)",
        *viewer_rows)
    return user_ids, item_ids, audiences


def make_tokens(settings: Settings, user_ids: list[str], streams: int) -> list[str]:
    """One token per stream; stream s belongs to user s % U."""
    algorithm = settings.jwt_algorithms[0]
    if not algorithm.startswith("HS"):
        raise BenchError("bench signs tokens with SSE_JWT_KEY: it needs an HMAC algorithm")
    exp = int(time.time()) + 24 * 3600
    per_user: list[str] = []
    for uid in user_ids:
        claims: dict[str, Any] = {settings.jwt_user_claim: uid, "sub": uid, "exp": exp}
        if settings.jwt_audience:
            claims["aud"] = settings.jwt_audience
        if settings.jwt_issuer:
            claims["iss"] = settings.jwt_issuer
        per_user.append(jwt.encode(claims, settings.jwt_key, algorithm=algorithm))
    return [per_user[s % len(user_ids)] for s in range(streams)]
