"""Rows written the way the core API writes them: plain SQL on its schema."""

from __future__ import annotations

import uuid
from typing import Any

Conn = Any  # asyncpg.Connection; asyncpg ships no type hints


async def user(conn: Conn, name: str = "user") -> str:
    uid = uuid.uuid4()
    await conn.execute(
        "INSERT INTO users (id, email, name) VALUES ($1, $2, $3)",
        uid, f"{uid}@example.test", name,
    )
    return str(uid)


async def wishlist(conn: Conn, owner: str, name: str = "Birthday") -> str:
    wid = uuid.uuid4()
    await conn.execute(
        "INSERT INTO wishlists (id, user_id, name) VALUES ($1, $2, $3)", wid, uuid.UUID(owner), name
    )
    return str(wid)


async def item(conn: Conn, wishlist_id: str, title: str = "Teapot", **cols: Any) -> str:
    iid = uuid.uuid4()
    names = ["id", "wishlist_id", "title", *cols]
    values = [iid, uuid.UUID(wishlist_id), title, *cols.values()]
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    await conn.execute(
        f"INSERT INTO items ({', '.join(names)}) VALUES ({placeholders})", *values
    )
    return str(iid)


async def bookmark(conn: Conn, viewer: str, wishlist_id: str) -> str:
    bid = uuid.uuid4()
    await conn.execute(
        "INSERT INTO shared_wishlist_bookmarks (id, user_id, wishlist_id, share_token)"
        " VALUES ($1, $2, $3, $4)",
        bid, uuid.UUID(viewer), uuid.UUID(wishlist_id), uuid.uuid4().hex,
    )
    return str(bid)


async def mark(conn: Conn, item_id: str, marker: str, quantity: int = 1) -> str:
    mid = uuid.uuid4()
    await conn.execute(
        "INSERT INTO marks (id, item_id, user_id, quantity) VALUES ($1, $2, $3, $4)",
        mid, uuid.UUID(item_id), uuid.UUID(marker), quantity,
    )
    return str(mid)


async def viewers(conn: Conn, wishlist_id: str, count: int) -> list[str]:
    """``count`` users, each with a bookmark on the wishlist, in one round trip."""
    rows = await conn.fetch(
        """
        WITH u AS (
            INSERT INTO users (email, name)
            SELECT gen_random_uuid()::text || '@example.test', 'viewer'
            FROM generate_series(1, $1)
            RETURNING id
        ), b AS (
            INSERT INTO shared_wishlist_bookmarks (user_id, wishlist_id, share_token)
            SELECT id, $2, md5(id::text) FROM u
            RETURNING user_id
        )
        SELECT user_id::text AS id FROM b
        """,
        count, uuid.UUID(wishlist_id),
    )
    return [r["id"] for r in rows]
