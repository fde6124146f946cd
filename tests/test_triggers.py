"""The NOTIFY triggers of ``sql/install.sql`` against a real PostgreSQL.

The ``db`` connection plays the core API (plain SQL on its tables); the
``notifications`` log listens on ``sse_events``. Each test notes the last
event id before its action (``since``) and looks only at payloads after it,
so setup writes never need to be waited for.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from sse_service import sqlinstall
from tests import factories as f
from tests.conftest import NotificationLog

Conn = Any  # asyncpg.Connection
Payload = dict[str, Any]

DATA_KEYS = {
    "wishlists:updated": {"id"},
    "items:updated": {"id", "wishlist_id"},
    "items:resolved": {"id", "wishlist_id", "status", "title"},
    "marks:updated": {"item_id", "wishlist_id"},
}
TRIGGERS = {
    ("wishlists", "sse_wishlists_insert"), ("wishlists", "sse_wishlists_update"),
    ("wishlists", "sse_wishlists_delete"),
    ("items", "sse_items_insert"), ("items", "sse_items_update"), ("items", "sse_items_delete"),
    ("marks", "sse_marks_insert"), ("marks", "sse_marks_update"), ("marks", "sse_marks_delete"),
    ("shared_wishlist_bookmarks", "sse_bookmarks_insert"),
    ("shared_wishlist_bookmarks", "sse_bookmarks_delete"),
}


# --------------------------------------------------------------------------- helpers


async def since(conn: Conn) -> int:
    """The last event id drawn so far: later events have larger ids."""
    value = await conn.fetchval(
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM sse.event_id"
    )
    return int(value)


def check_payload(raw: str) -> Payload:
    """Decode one NOTIFY payload and check its shape strictly."""
    assert len(raw.encode("utf-8")) < 8000
    p = json.loads(raw)
    assert isinstance(p, dict)
    assert set(p) == {"id", "ts", "event", "data", "users"}
    assert type(p["id"]) is int and p["id"] > 0
    assert isinstance(p["ts"], float) and abs(p["ts"] - time.time()) < 600
    assert p["event"] in DATA_KEYS
    assert set(p["data"]) == DATA_KEYS[p["event"]]
    users = p["users"]
    assert isinstance(users, list) and users
    assert len(set(users)) == len(users)
    for u in users:
        assert str(uuid.UUID(u)) == u
    return p


async def collected(log: NotificationLog, after: int) -> list[Payload]:
    """Every payload with an id above ``after`` committed before this call.

    A barrier, not a quiet period (:meth:`NotificationLog.settle`): once it
    returns, everything the test committed before has arrived, so an absence
    is an absence, however loaded the machine."""
    await log.settle()
    return [p for p in map(check_payload, log.raw) if p["id"] > after]


def inbox(payloads: list[Payload], user: str) -> list[tuple[str, str]]:
    """What ``user`` received: sorted (event, data as canonical JSON) pairs."""
    return sorted(
        (p["event"], json.dumps(p["data"], sort_keys=True)) for p in payloads if user in p["users"]
    )


def ev(event: str, **data: str) -> tuple[str, str]:
    return (event, json.dumps(data, sort_keys=True))


def recipients(payloads: list[Payload]) -> set[str]:
    return {u for p in payloads for u in p["users"]}


@asynccontextmanager
async def listening(dsn: str, channel: str = "sse_events") -> AsyncIterator[NotificationLog]:
    log = NotificationLog()
    conn = await asyncpg.connect(dsn)
    await log.listen(conn, channel)
    try:
        yield log
    finally:
        await conn.close()


class Shared:
    """A wishlist with an item, two viewers and a stranger."""

    def __init__(self, owner: str, viewers: list[str], stranger: str, wl: str, it: str) -> None:
        self.owner, self.viewers, self.stranger, self.wl, self.it = owner, viewers, stranger, wl, it

    @property
    def v1(self) -> str:
        return self.viewers[0]

    @property
    def v2(self) -> str:
        return self.viewers[1]


@pytest.fixture
async def shared(db: Conn) -> Shared:
    owner = await f.user(db, "owner")
    v1, v2 = await f.user(db, "v1"), await f.user(db, "v2")
    stranger = await f.user(db, "stranger")
    wl = await f.wishlist(db, owner)
    await f.bookmark(db, v1, wl)
    await f.bookmark(db, v2, wl)
    it = await f.item(db, wl)
    # Unrelated traffic the stranger is part of: must never leak into ours.
    other = await f.wishlist(db, stranger)
    await f.item(db, other)
    return Shared(owner, [v1, v2], stranger, wl, it)


def uid(s: str) -> uuid.UUID:
    return uuid.UUID(s)


# --------------------------------------------------------------------------- wishlists


async def test_wishlist_insert_notifies_owner(db: Conn, notifications: NotificationLog) -> None:
    owner = await f.user(db)
    after = await since(db)
    wl = await f.wishlist(db, owner)
    got = await collected(notifications, after)
    assert inbox(got, owner) == [ev("wishlists:updated", id=wl)]
    assert recipients(got) == {owner}


@pytest.mark.parametrize(
    "change",
    ["SET name = 'Renamed'", "SET deleted_at = now()", "SET is_public = true"],
    ids=["rename", "soft-delete", "publish"],
)
async def test_wishlist_update_notifies_owner_and_viewers(
    db: Conn, notifications: NotificationLog, shared: Shared, change: str
) -> None:
    after = await since(db)
    await db.execute(f"UPDATE wishlists {change} WHERE id = $1", uid(shared.wl))
    got = await collected(notifications, after)
    for u in (shared.owner, shared.v1, shared.v2):
        assert inbox(got, u) == [ev("wishlists:updated", id=shared.wl)]
    assert recipients(got) == {shared.owner, shared.v1, shared.v2}
    assert len({p["id"] for p in got}) == 1


async def test_wishlist_owner_change_notifies_both_owners(
    db: Conn, notifications: NotificationLog, shared: Shared
) -> None:
    new_owner = await f.user(db)
    after = await since(db)
    await db.execute(
        "UPDATE wishlists SET user_id = $1 WHERE id = $2", uid(new_owner), uid(shared.wl)
    )
    got = await collected(notifications, after)
    for u in (shared.owner, new_owner, shared.v1, shared.v2):
        assert inbox(got, u) == [ev("wishlists:updated", id=shared.wl)]
    assert shared.stranger not in recipients(got)


async def test_owner_with_own_bookmark_is_listed_once(
    db: Conn, notifications: NotificationLog, shared: Shared
) -> None:
    await f.bookmark(db, shared.owner, shared.wl)
    after = await since(db)
    await db.execute("UPDATE wishlists SET name = 'x' WHERE id = $1", uid(shared.wl))
    await db.execute("UPDATE items SET quantity = 5 WHERE id = $1", uid(shared.it))
    got = await collected(notifications, after)
    assert inbox(got, shared.owner) == sorted(
        [ev("wishlists:updated", id=shared.wl),
         ev("items:updated", id=shared.it, wishlist_id=shared.wl)]
    )


async def test_wishlist_delete_without_children(
    db: Conn, notifications: NotificationLog
) -> None:
    owner, viewer = await f.user(db), await f.user(db)
    wl = await f.wishlist(db, owner)
    await f.bookmark(db, viewer, wl)
    after = await since(db)
    await db.execute("DELETE FROM wishlists WHERE id = $1", uid(wl))
    got = await collected(notifications, after)
    assert inbox(got, owner) == [ev("wishlists:updated", id=wl)]
    assert inbox(got, viewer) == [ev("wishlists:updated", id=wl)]  # bookmark cascade: silent


# --------------------------------------------------------------------------- items


async def test_item_insert_update_softdelete_delete(
    db: Conn, notifications: NotificationLog, shared: Shared
) -> None:
    after = await since(db)
    it = await f.item(db, shared.wl, "Kettle")
    await db.execute("UPDATE items SET price = 9.99, updated_at = now() WHERE id = $1", uid(it))
    await db.execute("UPDATE items SET deleted_at = now() WHERE id = $1", uid(it))
    await db.execute("DELETE FROM items WHERE id = $1", uid(it))
    got = await collected(notifications, after)
    expected = [ev("items:updated", id=it, wishlist_id=shared.wl)] * 4
    for u in (shared.owner, shared.v1, shared.v2):
        assert inbox(got, u) == expected
    assert recipients(got) == {shared.owner, shared.v1, shared.v2}
    assert len({p["id"] for p in got}) == 4


@pytest.mark.parametrize("status", ["RESOLVED", "FAILED"])
async def test_item_resolution_goes_to_owner_viewers_get_updated(
    db: Conn, notifications: NotificationLog, shared: Shared, status: str
) -> None:
    after = await since(db)
    await db.execute(
        "UPDATE items SET status = 'RESOLVING' WHERE id = $1", uid(shared.it)
    )
    await db.execute(
        "UPDATE items SET status = $1, title = 'Big Teapot' WHERE id = $2", status, uid(shared.it)
    )
    got = await collected(notifications, after)
    updated = ev("items:updated", id=shared.it, wishlist_id=shared.wl)
    resolved = ev(
        "items:resolved", id=shared.it, wishlist_id=shared.wl,
        status=status.lower(), title="Big Teapot",
    )
    assert inbox(got, shared.owner) == sorted([updated, resolved])  # RESOLVING, then resolved
    for v in shared.viewers:
        assert inbox(got, v) == [updated, updated]
    assert shared.stranger not in recipients(got)
    (resolved_payload,) = [p for p in got if p["event"] == "items:resolved"]
    assert resolved_payload["users"] == [shared.owner]


async def test_item_update_keeping_resolved_status_is_plain_update(
    db: Conn, notifications: NotificationLog, shared: Shared
) -> None:
    it = await f.item(db, shared.wl, status="RESOLVED")
    after = await since(db)
    await db.execute("UPDATE items SET title = 'Other' WHERE id = $1", uid(it))
    got = await collected(notifications, after)
    assert inbox(got, shared.owner) == [ev("items:updated", id=it, wishlist_id=shared.wl)]


async def test_resolution_with_owner_bookmark_sends_no_items_updated_to_owner(
    db: Conn, notifications: NotificationLog, shared: Shared
) -> None:
    await f.bookmark(db, shared.owner, shared.wl)
    after = await since(db)
    await db.execute("UPDATE items SET status = 'RESOLVED' WHERE id = $1", uid(shared.it))
    got = await collected(notifications, after)
    assert [e for e, _ in inbox(got, shared.owner)] == ["items:resolved"]


async def test_item_moved_between_wishlists(
    db: Conn, notifications: NotificationLog, shared: Shared
) -> None:
    other_owner, other_viewer = await f.user(db), await f.user(db)
    target = await f.wishlist(db, other_owner)
    await f.bookmark(db, other_viewer, target)
    after = await since(db)
    await db.execute("UPDATE items SET wishlist_id = $1 WHERE id = $2", uid(target), uid(shared.it))
    got = await collected(notifications, after)
    left = ev("items:updated", id=shared.it, wishlist_id=shared.wl)
    arrived = ev("items:updated", id=shared.it, wishlist_id=target)
    for u in (shared.owner, shared.v1, shared.v2):
        assert inbox(got, u) == [left]
    for u in (other_owner, other_viewer):
        assert inbox(got, u) == [arrived]


async def test_item_delete_with_marks(
    db: Conn, notifications: NotificationLog, shared: Shared
) -> None:
    marker = await f.user(db)
    await f.bookmark(db, marker, shared.wl)
    await f.mark(db, shared.it, marker)
    await f.mark(db, shared.it, shared.v1)
    after = await since(db)
    await db.execute("DELETE FROM items WHERE id = $1", uid(shared.it))
    got = await collected(notifications, after)
    updated = ev("items:updated", id=shared.it, wishlist_id=shared.wl)
    marks = ev("marks:updated", item_id=shared.it, wishlist_id=shared.wl)
    assert inbox(got, shared.owner) == [updated]
    for u in (shared.v1, shared.v2, marker):
        assert inbox(got, u) == [updated, marks]  # once: the cascaded marks stay silent
    assert shared.stranger not in recipients(got)


# --------------------------------------------------------------------------- marks


async def test_marks_reach_viewers_and_marker_never_owner(
    db: Conn, notifications: NotificationLog, shared: Shared
) -> None:
    await f.bookmark(db, shared.owner, shared.wl)  # the owner viewing their own list
    marker = await f.user(db)  # marks without a bookmark of their own
    after = await since(db)
    m = await f.mark(db, shared.it, marker)
    await db.execute("UPDATE marks SET quantity = 2 WHERE id = $1", uid(m))
    await db.execute("DELETE FROM marks WHERE id = $1", uid(m))
    await f.mark(db, shared.it, shared.owner)  # the owner marking their own item
    got = await collected(notifications, after)
    mark_ev = ev("marks:updated", item_id=shared.it, wishlist_id=shared.wl)
    assert inbox(got, marker) == [mark_ev] * 3
    for v in shared.viewers:
        assert inbox(got, v) == [mark_ev] * 4
    assert shared.owner not in recipients(got)
    assert shared.stranger not in recipients(got)


async def test_mark_moved_to_other_item_notifies_both_and_old_marker(
    db: Conn, notifications: NotificationLog, shared: Shared
) -> None:
    other_owner, other_viewer = await f.user(db), await f.user(db)
    target_wl = await f.wishlist(db, other_owner)
    await f.bookmark(db, other_viewer, target_wl)
    target = await f.item(db, target_wl)
    m = await f.mark(db, shared.it, shared.v1)
    after = await since(db)
    await db.execute(
        "UPDATE marks SET item_id = $1, user_id = $2 WHERE id = $3",
        uid(target), uid(other_viewer), uid(m),
    )
    got = await collected(notifications, after)
    old = ev("marks:updated", item_id=shared.it, wishlist_id=shared.wl)
    new = ev("marks:updated", item_id=target, wishlist_id=target_wl)
    assert inbox(got, shared.v1) == [old]
    assert inbox(got, shared.v2) == [old]
    assert inbox(got, other_viewer) == [new]
    assert shared.owner not in recipients(got)
    assert other_owner not in recipients(got)


# --------------------------------------------------------------------------- bookmarks


async def test_bookmark_insert_and_delete_notify_the_viewer(
    db: Conn, notifications: NotificationLog, shared: Shared
) -> None:
    viewer = await f.user(db)
    after = await since(db)
    b = await f.bookmark(db, viewer, shared.wl)
    await db.execute("DELETE FROM shared_wishlist_bookmarks WHERE id = $1", uid(b))
    got = await collected(notifications, after)
    assert inbox(got, viewer) == [ev("wishlists:updated", id=shared.wl)] * 2
    assert recipients(got) == {viewer}


# --------------------------------------------------------------------------- nothing sent


async def test_no_op_updates_and_bookmark_updates_send_nothing(
    db: Conn, notifications: NotificationLog, shared: Shared
) -> None:
    m = await f.mark(db, shared.it, shared.v1)
    await db.execute(
        """UPDATE items SET resolver_metadata = '{"a": [1, 2]}', image_base64 = repeat('x', 100000)
           WHERE id = $1""",
        uid(shared.it),
    )
    after = await since(db)
    await db.execute("UPDATE wishlists SET name = name, deleted_at = NULL WHERE id = $1",
                     uid(shared.wl))
    await db.execute(  # json has no "=": the trigger compares it as text
        "UPDATE items SET resolver_metadata = resolver_metadata, title = title,"
        " image_base64 = image_base64, status = status WHERE id = $1",
        uid(shared.it),
    )
    await db.execute("UPDATE marks SET quantity = quantity WHERE id = $1", uid(m))
    await db.execute(
        "UPDATE shared_wishlist_bookmarks SET last_accessed_at = now() + interval '1 hour'"
        " WHERE wishlist_id = $1",
        uid(shared.wl),
    )
    assert await collected(notifications, after) == []
    # The same json column really changed does send.
    await db.execute(
        """UPDATE items SET resolver_metadata = '{"a": [1, 3]}' WHERE id = $1""", uid(shared.it)
    )
    got = await collected(notifications, after)
    assert [p["event"] for p in got] == ["items:updated"]


async def test_rollback_sends_nothing(
    db: Conn, notifications: NotificationLog, shared: Shared
) -> None:
    after = await since(db)
    tr = db.transaction()
    await tr.start()
    await db.execute("UPDATE wishlists SET name = 'gone' WHERE id = $1", uid(shared.wl))
    await f.item(db, shared.wl)
    await f.mark(db, shared.it, shared.v1)
    await db.execute("DELETE FROM wishlists WHERE id = $1", uid(shared.wl))
    await tr.rollback()
    assert await collected(notifications, after) == []


# --------------------------------------------------------------------------- cascades


async def test_cascade_delete_of_wishlist_with_items_marks_and_viewers(
    db: Conn, notifications: NotificationLog, shared: Shared
) -> None:
    it2 = await f.item(db, shared.wl, "Cups")
    it3 = await f.item(db, shared.wl, "No marks")
    marker = await f.user(db)  # marked via an expired bookmark: no bookmark left
    await f.mark(db, shared.it, shared.v1)
    await f.mark(db, shared.it, marker)
    await f.mark(db, it2, shared.v2)
    await f.mark(db, it2, shared.owner)  # even the owner's own mark does not reach them
    await db.execute(
        "INSERT INTO share_links (wishlist_id, token) VALUES ($1, $2)",
        uid(shared.wl), uuid.uuid4().hex,
    )
    after = await since(db)
    await db.execute("DELETE FROM wishlists WHERE id = $1", uid(shared.wl))
    assert await db.fetchval("SELECT count(*) FROM items WHERE wishlist_id = $1",
                             uid(shared.wl)) == 0
    got = await collected(notifications, after)
    wl_ev = ev("wishlists:updated", id=shared.wl)
    items_ev = [ev("items:updated", id=i, wishlist_id=shared.wl) for i in (shared.it, it2, it3)]
    marks_ev = [ev("marks:updated", item_id=i, wishlist_id=shared.wl) for i in (shared.it, it2)]
    assert inbox(got, shared.owner) == sorted([wl_ev, *items_ev])
    for v in shared.viewers:
        assert inbox(got, v) == sorted([wl_ev, *items_ev, *marks_ev])
    assert inbox(got, marker) == [marks_ev[0]]
    assert shared.stranger not in recipients(got)


async def test_deleting_users_cascades_and_commits(
    db: Conn, notifications: NotificationLog, shared: Shared
) -> None:
    await f.mark(db, shared.it, shared.v1)
    await f.mark(db, shared.it, shared.v2)
    after = await since(db)
    await db.execute("DELETE FROM users WHERE id = $1", uid(shared.v1))  # viewer and marker
    got = await collected(notifications, after)
    mark_ev = ev("marks:updated", item_id=shared.it, wishlist_id=shared.wl)
    assert inbox(got, shared.v2) == [mark_ev]
    assert shared.owner not in recipients(got)
    after = await since(db)
    await db.execute("DELETE FROM users WHERE id = $1", uid(shared.owner))
    got = await collected(notifications, after)
    assert inbox(got, shared.v2) == sorted([
        ev("wishlists:updated", id=shared.wl),
        ev("items:updated", id=shared.it, wishlist_id=shared.wl),
        mark_ev,
    ])
    assert await db.fetchval("SELECT count(*) FROM wishlists WHERE id = $1", uid(shared.wl)) == 0


# --------------------------------------------------------------------------- size limits


async def test_thousand_viewers_each_get_every_event_once(
    db: Conn, notifications: NotificationLog
) -> None:
    owner = await f.user(db)
    wl = await f.wishlist(db, owner)
    many = await f.viewers(db, wl, 1000)
    it = await f.item(db, wl)
    after = await since(db)
    await db.execute("UPDATE wishlists SET name = 'Party' WHERE id = $1", uid(wl))
    await f.mark(db, it, many[0])
    await db.execute("DELETE FROM wishlists WHERE id = $1", uid(wl))  # cascade, 1000 bookmarks
    got = await collected(notifications, after)

    # Every chunk is a notification of its own, with an id of its own.
    assert len({p["id"] for p in got}) == len(got)
    by_event: dict[tuple[str, str, float], list[Payload]] = defaultdict(list)
    for p in got:
        by_event[p["event"], json.dumps(p["data"], sort_keys=True), p["ts"]].append(p)
    # update, mark, and the delete's wishlists/items/marks events
    assert len(by_event) == 5
    for chunks in by_event.values():
        assert len(chunks) >= 5  # 1,000 uuids need at least five 8 KB payloads
        counts = Counter(u for p in chunks for u in p["users"])
        assert set(counts.values()) == {1}
        assert set(counts) >= set(many)
        if chunks[0]["event"] == "marks:updated":
            assert owner not in counts
        else:
            assert owner in counts
    assert max(len(r.encode()) for r in notifications.raw) < 8000


@pytest.mark.parametrize(
    "title",
    ["\U0001f600" * 200, "\x01" * 200, '"\\' * 100, ("é\u2028</script>\t\n\x1f" * 15)[:200]],
    ids=["emoji", "u0001", "quotes-backslashes", "mixed"],
)
async def test_maximum_title_with_nasty_characters_round_trips(
    db: Conn, notifications: NotificationLog, title: str
) -> None:
    assert len(title) == 200
    owner = await f.user(db)
    wl = await f.wishlist(db, owner)
    await f.viewers(db, wl, 300)
    it = await f.item(db, wl, title)
    after = await since(db)
    await db.execute("UPDATE items SET status = 'RESOLVED' WHERE id = $1", uid(it))
    got = await collected(notifications, after)
    (resolved,) = [p for p in got if p["event"] == "items:resolved"]
    assert resolved["data"]["title"] == title
    assert resolved["users"] == [owner]
    assert len(recipients(got)) == 301


# --------------------------------------------------------------------------- install / uninstall


async def sse_triggers(conn: Conn) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " WHERE NOT t.tgisinternal AND t.tgname LIKE 'sse\\_%'"
    )
    return [(r["relname"], r["tgname"]) for r in rows]


async def test_install_twice_and_concurrently_is_harmless(fresh_database_dsn: str) -> None:
    conn = await asyncpg.connect(fresh_database_dsn)
    other = await asyncpg.connect(fresh_database_dsn)
    try:
        await sqlinstall.install(conn)  # the fixture installed once already
        await asyncio.gather(sqlinstall.install(conn), sqlinstall.install(other))
        triggers = await sse_triggers(conn)
        assert sorted(triggers) == sorted(TRIGGERS)
        async with listening(fresh_database_dsn) as log:
            owner = await f.user(conn)
            wl = await f.wishlist(conn, owner)
            it = await f.item(conn, wl)
            await conn.execute("UPDATE items SET status = 'FAILED' WHERE id = $1", uid(it))
            got = await collected(log, 0)
        assert [p["event"] for p in got] == ["wishlists:updated", "items:updated",
                                              "items:resolved"]
    finally:
        await conn.close()
        await other.close()


async def test_set_channel_survives_reinstall(fresh_database_dsn: str) -> None:
    conn = await asyncpg.connect(fresh_database_dsn)
    try:
        owner = await f.user(conn)
        for bad in ("", "x" * 64, "\u00e9" * 32):  # empty; 64 bytes; 64 bytes in 32 chars
            with pytest.raises(asyncpg.InvalidParameterValueError):
                await conn.execute("SELECT sse.set_channel($1)", bad)
        channel = "it's \"odd\" " + "x" * 52
        assert len(channel.encode()) == 63
        async with listening(fresh_database_dsn) as default, \
                listening(fresh_database_dsn, channel) as custom:
            await sqlinstall.install(conn, channel=channel)
            await f.wishlist(conn, owner, "one")
            # A plain re-install (no set_channel) keeps the configured channel.
            await conn.execute(sqlinstall.INSTALL_SQL.read_text(encoding="utf-8"))
            await f.wishlist(conn, owner, "two")
            assert len(await collected(custom, 0)) == 2
            assert await collected(default, 0) == []
            await conn.execute("SELECT sse.set_channel('sse_events')")
            await f.wishlist(conn, owner, "three")
            assert len(await collected(default, 0)) == 1
            assert len(await collected(custom, 0)) == 2
    finally:
        await conn.close()


async def test_uninstall_removes_only_our_objects(fresh_database_dsn: str) -> None:
    conn = await asyncpg.connect(fresh_database_dsn)
    try:
        owner, viewer = await f.user(conn), await f.user(conn)
        wl = await f.wishlist(conn, owner)
        await f.bookmark(conn, viewer, wl)
        it = await f.item(conn, wl)
        await f.mark(conn, it, viewer)
        # Someone else's trigger that happens to share our prefix must survive.
        await conn.execute(
            "CREATE FUNCTION public.keep_me() RETURNS trigger LANGUAGE plpgsql"
            " AS $$BEGIN RETURN NULL; END$$;"
            " CREATE TRIGGER sse_not_ours AFTER INSERT ON items"
            " FOR EACH ROW EXECUTE FUNCTION public.keep_me()"
        )
        counts = "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM wishlists)," \
                 " (SELECT count(*) FROM items), (SELECT count(*) FROM marks)," \
                 " (SELECT count(*) FROM shared_wishlist_bookmarks)"
        before = tuple(await conn.fetchrow(counts))

        await sqlinstall.uninstall(conn)
        await sqlinstall.uninstall(conn)  # idempotent

        assert await sse_triggers(conn) == [("items", "sse_not_ours")]
        assert await conn.fetchval("SELECT to_regnamespace('sse')") is None
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_class WHERE relname = 'sse_bookmarks_wishlist_idx'"
        ) == 0
        assert tuple(await conn.fetchrow(counts)) == before
        assert await conn.fetchval("SELECT to_regprocedure('public.keep_me()')") is not None

        async with listening(fresh_database_dsn) as log:
            it2 = await f.item(conn, wl)
            await conn.execute("UPDATE items SET status = 'RESOLVED' WHERE id = $1", uid(it2))
            await conn.execute("DELETE FROM wishlists WHERE id = $1", uid(wl))
            assert await collected(log, 0) == []

        await sqlinstall.install(conn)  # and back
        assert sorted(t for t in await sse_triggers(conn) if t[1] != "sse_not_ours") \
            == sorted(TRIGGERS)
    finally:
        await conn.close()


async def test_core_schema_drift_never_fails_a_write(fresh_database_dsn: str) -> None:
    conn = await asyncpg.connect(fresh_database_dsn)
    warnings: list[str] = []
    conn.add_log_listener(lambda _c, msg: warnings.append(str(msg)))
    try:
        owner = await f.user(conn)
        wl = await f.wishlist(conn, owner)
        it = await f.item(conn, wl)
        # A column added later is covered after a re-install.
        await conn.execute("ALTER TABLE items ADD COLUMN note text")
        async with listening(fresh_database_dsn) as log:
            await conn.execute("UPDATE items SET note = 'a' WHERE id = $1", uid(it))
            assert await collected(log, 0) == []
            await sqlinstall.install(conn)
            await conn.execute("UPDATE items SET note = 'b' WHERE id = $1", uid(it))
            assert [p["event"] for p in await collected(log, 0)] == ["items:updated"]
            log.clear()
            # A renamed column breaks items:resolved; the write still commits, and
            # the loss is counted for the service to announce (sync:reset), not silent.
            failed = "SELECT coalesce(pg_sequence_last_value('sse.failed_events'), 0)"
            assert await conn.fetchval(failed) == 0
            await conn.execute("ALTER TABLE items RENAME COLUMN title TO name")
            await conn.execute("UPDATE items SET status = 'RESOLVED' WHERE id = $1", uid(it))
            assert await conn.fetchval("SELECT status::text FROM items WHERE id = $1",
                                       uid(it)) == "RESOLVED"
            assert await collected(log, 0) == []
            assert await conn.fetchval(failed) == 1
        assert any("not notified" in w for w in warnings)
    finally:
        await conn.close()
