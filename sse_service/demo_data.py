"""The demo's sample data, and the writes its buttons make, in plain SQL.

Everything here plays the core API: it writes the core tables the way the
core API's handlers would, so that the real triggers fire and the real
service delivers the events. Nothing of it is part of the service.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

Conn = Any  # asyncpg.Connection; asyncpg ships no type hints

MAX_ITEMS = 40  # items in the demo wishlist: bounds what a loop of clicks can grow
MAX_TITLE = 200  # items.title is VARCHAR(200)
MAX_NAME = 100  # wishlists.name is VARCHAR(100)

SAMPLE_ITEMS = (
    ("Espresso cups, set of two", "RESOLVED"),
    ("Hardcover notebook", "RESOLVED"),
    ("Board game: Azul", "PENDING"),
)


@dataclass(frozen=True, slots=True)
class Person:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Sample:
    """Who is who in the demo database."""

    owner: Person
    viewer: Person
    wishlist_id: str

    def role(self, user_id: str) -> str | None:
        """``"owner"``, ``"viewer"`` or None for a user of neither."""
        if user_id == self.owner.id:
            return "owner"
        if user_id == self.viewer.id:
            return "viewer"
        return None


async def seed(conn: Conn) -> Sample:
    """Two users, the first one's wishlist shared with the second, a few items,
    and one item already marked by the viewer (which the owner must never see)."""
    owner = Person(str(uuid.uuid4()), "Alice")
    viewer = Person(str(uuid.uuid4()), "Bob")
    wishlist = str(uuid.uuid4())
    async with conn.transaction():
        for person in (owner, viewer):
            await conn.execute("INSERT INTO users (id, email, name) VALUES ($1, $2, $3)",
                               uuid.UUID(person.id),
                               f"{person.name.lower()}-{person.id[:8]}@demo.invalid",
                               person.name)
        await conn.execute(
            "INSERT INTO wishlists (id, user_id, name, description) VALUES ($1, $2, $3, $4)",
            uuid.UUID(wishlist), uuid.UUID(owner.id), f"{owner.name}'s birthday",
            "Shared with Bob through a share link")
        # The viewer opened a share link: the bookmark is what makes him a viewer.
        await conn.execute(
            "INSERT INTO shared_wishlist_bookmarks (user_id, wishlist_id, share_token)"
            " VALUES ($1, $2, $3)", uuid.UUID(viewer.id), uuid.UUID(wishlist), uuid.uuid4().hex)
        first = None
        for title, status in SAMPLE_ITEMS:
            item = await conn.fetchval(
                # clock_timestamp(): the items keep this order on the page (now() is
                # the same for the whole transaction).
                "INSERT INTO items (wishlist_id, title, status, created_at)"
                " VALUES ($1, $2, $3, clock_timestamp()) RETURNING id",
                uuid.UUID(wishlist), title, status)
            first = first or item
        await conn.execute("INSERT INTO marks (item_id, user_id) VALUES ($1, $2)",
                           first, uuid.UUID(viewer.id))
    return Sample(owner, viewer, wishlist)


async def view(conn: Conn, sample: Sample, role: str) -> dict[str, Any]:
    """The wishlist as ``role`` may see it. The owner's view carries nothing about
    marks (surprise mode); the viewer's says how often each item is marked and
    whether by him."""
    me = uuid.UUID(sample.owner.id if role == "owner" else sample.viewer.id)
    row = await conn.fetchrow("SELECT name, description FROM wishlists WHERE id = $1",
                              uuid.UUID(sample.wishlist_id))
    if role == "owner":
        rows = await conn.fetch(
            "SELECT id::text, title, lower(status::text) AS status FROM items"
            " WHERE wishlist_id = $1 AND deleted_at IS NULL ORDER BY created_at, id",
            uuid.UUID(sample.wishlist_id))
    else:
        rows = await conn.fetch(
            "SELECT i.id::text, i.title, lower(i.status::text) AS status,"
            " count(m.id)::int AS marks, coalesce(bool_or(m.user_id = $2), false) AS mine"
            " FROM items i LEFT JOIN marks m ON m.item_id = i.id"
            " WHERE i.wishlist_id = $1 AND i.deleted_at IS NULL"
            " GROUP BY i.id ORDER BY i.created_at, i.id",
            uuid.UUID(sample.wishlist_id), me)
    return {
        "role": role,
        "wishlist": {"id": sample.wishlist_id, "name": row["name"],
                     "description": row["description"]},
        "items": [dict(r) for r in rows],
    }


async def add_item(conn: Conn, sample: Sample, title: str) -> str | None:
    """A new pending item; None when the wishlist already holds :data:`MAX_ITEMS`."""
    async with conn.transaction():
        # Serialises concurrent adds, so that the cap holds.
        await conn.execute("SELECT 1 FROM wishlists WHERE id = $1 FOR UPDATE",
                           uuid.UUID(sample.wishlist_id))
        count = await conn.fetchval(
            "SELECT count(*) FROM items WHERE wishlist_id = $1 AND deleted_at IS NULL",
            uuid.UUID(sample.wishlist_id))
        if count >= MAX_ITEMS:
            return None
        item = await conn.fetchval(
            "INSERT INTO items (wishlist_id, title) VALUES ($1, $2) RETURNING id::text",
            uuid.UUID(sample.wishlist_id), title)
    return str(item)


async def resolve_item(conn: Conn, sample: Sample, item_id: uuid.UUID) -> bool:
    """What the core API's resolver does when it has fetched an item's page: the
    status moves to RESOLVED. False when no such item is pending in the wishlist."""
    done = await conn.fetchval(
        "UPDATE items SET status = 'RESOLVED', updated_at = now()"
        " WHERE id = $1 AND wishlist_id = $2 AND deleted_at IS NULL AND status <> 'RESOLVED'"
        " RETURNING true", item_id, uuid.UUID(sample.wishlist_id))
    return bool(done)


async def toggle_mark(conn: Conn, sample: Sample, item_id: uuid.UUID) -> bool | None:
    """The viewer marks the item, or unmarks it if he had; the new state, or None
    when the item is not in the wishlist."""
    viewer = uuid.UUID(sample.viewer.id)
    async with conn.transaction():
        exists = await conn.fetchval(
            "SELECT true FROM items WHERE id = $1 AND wishlist_id = $2 AND deleted_at IS NULL",
            item_id, uuid.UUID(sample.wishlist_id))
        if not exists:
            return None
        removed = await conn.fetchval(
            "DELETE FROM marks WHERE item_id = $1 AND user_id = $2 RETURNING true",
            item_id, viewer)
        if removed:
            return False
        await conn.execute(
            "INSERT INTO marks (item_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            item_id, viewer)
    return True


async def rename_wishlist(conn: Conn, sample: Sample, name: str) -> None:
    await conn.execute("UPDATE wishlists SET name = $2, updated_at = now() WHERE id = $1",
                       uuid.UUID(sample.wishlist_id), name)
