"""Roles of the database that are not the core API: what they can no longer do.

Any role that can connect (CONNECT is granted to PUBLIC by default) used to be
able to make every stream reset (``nextval('sse.dropped_events')``) and to send
events to anyone (``sse.send``, ``sse.emit``). These tests connect as a fresh
role with no grant of its own, and as a role that may only write the core
tables, and check what each can and cannot do; and they drive the triggers'
loss paths for real (a NOTIFY queue "full", a trigger body that fails), which
must reach clients as ``sync:reset`` while the core write still commits.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from sse_service import sqlinstall
from sse_service.listener import LOOKUP_APPLICATION_NAME
from sse_service.scratchdb import database_name
from tests import factories as f
from tests.conftest import NotificationLog
from tests.harness import Running, running, settings_for, token
from tests.sseclient import SSEClient

Conn = Any  # asyncpg.Connection


def as_role(dsn: str, role: str) -> str:
    """``dsn`` with the user replaced by ``role`` (the test server trusts 127.0.0.1)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


@pytest.fixture
async def make_role(pg_admin_dsn: str) -> AsyncIterator[Callable[[], Any]]:
    """Creates login roles on the test server (no grant of their own), drops them
    after. A test that grants a role something revokes it again itself."""
    admin = await asyncpg.connect(pg_admin_dsn)
    made: list[str] = []

    async def make() -> str:
        name = f"sse_test_role_{uuid.uuid4().hex[:12]}"
        await admin.execute(f'CREATE ROLE "{name}" LOGIN')
        made.append(name)
        return name

    try:
        yield make
    finally:
        try:
            for name in made:
                await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        finally:
            await admin.close()


DENIED = [
    "SELECT nextval('sse.dropped_events')",
    "SELECT nextval('sse.failed_events')",
    "SELECT setval('sse.dropped_events', 1000)",
    "SELECT nextval('sse.event_id')",
    "SELECT sse.send('items:updated', '{}', ARRAY[gen_random_uuid()])",
    "SELECT sse.emit('items:resolved', ARRAY[gen_random_uuid()], '{\"title\": \"FAKE\"}')",
    "SELECT sse.items_updated(gen_random_uuid(), gen_random_uuid())",
    "SELECT sse.marks_updated(gen_random_uuid(), ARRAY[gen_random_uuid()])",
    "SELECT sse.set_channel('elsewhere')",
    "SELECT * FROM sse.event_id",
]


async def test_a_role_without_grants_cannot_reset_streams_or_send_events(
        fresh_database_dsn: str, make_role: Callable[[], Any]) -> None:
    role = await make_role()
    conn = await asyncpg.connect(as_role(fresh_database_dsn, role))
    try:
        for statement in DENIED:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
        # What the service's role needs stays readable by any role: the counters
        # (its LISTEN probe) and the channel's name (`sse-service check`).
        assert await conn.fetchval(
            "SELECT coalesce(pg_sequence_last_value('sse.dropped_events'), 0)"
            " + coalesce(pg_sequence_last_value('sse.failed_events'), 0)") == 0
        assert await conn.fetchval("SELECT sse.channel()") == "sse_events"
    finally:
        await conn.close()


async def test_an_operator_granted_emit_can_send_and_nothing_more(
        fresh_database_dsn: str, make_role: Callable[[], Any]) -> None:
    """The documented grant for sending by hand is enough: sse.emit() runs as its
    owner, so the operator's role needs no grant on what it calls."""
    operator = await make_role()
    admin = await asyncpg.connect(fresh_database_dsn)
    await admin.execute(f'GRANT EXECUTE ON FUNCTION sse.emit(text, uuid[], jsonb) TO "{operator}"')
    conn = await asyncpg.connect(as_role(fresh_database_dsn, operator))
    log = NotificationLog()
    try:
        await log.listen(admin)
        user = uuid.uuid4()
        await conn.execute("SELECT sse.emit('items:updated', ARRAY[$1::uuid], '{\"id\": \"x\"}')",
                           user)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("SELECT sse.send('items:updated', '{}', ARRAY[gen_random_uuid()])")
        await log.settle()
        assert [(p["event"], p["users"], p["data"]) for p in log.payloads] == [
            ("items:updated", [str(user)], {"id": "x"})]
    finally:
        await conn.close()
        await admin.execute(
            f'REVOKE ALL ON FUNCTION sse.emit(text, uuid[], jsonb) FROM "{operator}"')
        await admin.close()


async def test_a_writer_with_no_grant_on_schema_sse_still_notifies(
        fresh_database_dsn: str, make_role: Callable[[], Any]) -> None:
    """The trigger functions run as their owner (SECURITY DEFINER): the core API's
    role needs nothing of ours, yet cannot call what the triggers call."""
    writer = await make_role()
    admin = await asyncpg.connect(fresh_database_dsn)
    await admin.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public"
                        f' TO "{writer}"')
    conn = await asyncpg.connect(as_role(fresh_database_dsn, writer))
    log = NotificationLog()
    try:
        await log.listen(admin)
        owner = await f.user(conn)
        wl = await f.wishlist(conn, owner)
        await conn.execute("UPDATE wishlists SET name = 'x' WHERE id = $1", uuid.UUID(wl))
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("SELECT nextval('sse.dropped_events')")
        await log.settle()  # a barrier: everything committed before has arrived
        assert sum(owner in p for p in log.raw) == 2  # the insert and the update
        assert await admin.fetchval(
            "SELECT coalesce(pg_sequence_last_value('sse.failed_events'), 0)") == 0
    finally:
        await conn.close()
        await admin.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{writer}"')
        await admin.close()


async def test_a_full_notify_queue_drops_events_and_clients_get_one_reset(
        fresh_database_dsn: str) -> None:
    """The triggers' drop path, driven for real: sse.queue_limit() at 0 makes
    every trigger see a "full" queue. The writes commit, the drops are counted,
    and the service turns the count into sync:reset (events_dropped)."""
    admin = await asyncpg.connect(fresh_database_dsn)
    warnings: list[str] = []
    admin.add_log_listener(lambda _c, msg: warnings.append(str(msg)))
    try:
        owner = await f.user(admin)
        wl = await f.wishlist(admin, owner)
        async with running(settings_for(fresh_database_dsn)) as svc:
            c = await SSEClient.open(svc.port, token=token(owner))
            await svc.wait_streams(1)
            await admin.execute("CREATE OR REPLACE FUNCTION sse.queue_limit()"
                                " RETURNS double precision LANGUAGE sql IMMUTABLE"
                                " AS 'SELECT 0::double precision'")
            await admin.execute("UPDATE wishlists SET name = 'dropped' WHERE id = $1",
                                uuid.UUID(wl))
            assert await admin.fetchval("SELECT name FROM wishlists WHERE id = $1",
                                        uuid.UUID(wl)) == "dropped"
            assert await admin.fetchval("SELECT pg_sequence_last_value('sse.dropped_events')"
                                        ) == 1
            ev = await c.next_event(timeout=10)
            assert ev.event == "sync:reset" and ev.json == {"reason": "events_dropped"}
            assert svc.service.listener.state.connected  # a gap, not a lost connection
            assert any("event dropped" in w for w in warnings)
            await c.close()
    finally:
        await admin.close()


async def test_a_failing_trigger_reaches_clients_as_a_reset(fresh_database_dsn: str) -> None:
    """A real fault in a trigger body (a column renamed under it): the write
    commits, the event is lost, and every stream is told (sync:reset)."""
    admin = await asyncpg.connect(fresh_database_dsn)
    try:
        owner = await f.user(admin)
        wl = await f.wishlist(admin, owner)
        it = await f.item(admin, wl)
        async with running(settings_for(fresh_database_dsn)) as svc:
            c = await SSEClient.open(svc.port, token=token(owner))
            bystander = await SSEClient.open(svc.port, token=token(str(uuid.uuid4())))
            await svc.wait_streams(2)
            await admin.execute("ALTER TABLE items RENAME COLUMN title TO name")
            await admin.execute("UPDATE items SET status = 'RESOLVED' WHERE id = $1",
                                uuid.UUID(it))
            assert await admin.fetchval("SELECT status::text FROM items WHERE id = $1",
                                        uuid.UUID(it)) == "RESOLVED"
            for client in (c, bystander):  # the recipients are unknown: everybody
                ev = await client.next_event(timeout=10)
                assert ev.event == "sync:reset" and ev.json == {"reason": "trigger_failed"}
            assert svc.service.stats.resets["trigger_failed"] == 2
            await c.close()
            await bystander.close()
    finally:
        await admin.close()



def note(user: str, **data: Any) -> str:
    return json.dumps({"event": "items:updated", "users": [user], "data": data})


async def test_notify_roles_refuses_other_roles_and_keeps_commit_order(
        database_dsn: str, db: Conn, make_role: Callable[[], Any]) -> None:
    """With SSE_NOTIFY_ROLES=@writers, a role that cannot write the core tables
    reaches nobody (the probe's fake items:resolved); notifications from
    senders not seen before are held until their role is known, and nothing
    overtakes them."""
    intruder_role = await make_role()
    intruder = await asyncpg.connect(as_role(database_dsn, intruder_role))
    first_timer = await asyncpg.connect(database_dsn)  # allowed, pid not seen yet
    try:
        async with running(settings_for(database_dsn, SSE_NOTIFY_ROLES="@writers")) as svc:
            user = str(uuid.uuid4())
            c = await SSEClient.open(svc.port, token=token(user))
            await svc.wait_streams(1)
            fake = json.dumps({"event": "items:resolved", "users": [user], "data": {
                "id": "x", "wishlist_id": "y", "status": "resolved",
                "title": "FAKE: click https://evil.example"}})
            await first_timer.execute("SELECT pg_notify('sse_events', $1)", note(user, n=1))
            await intruder.execute("SELECT pg_notify('sse_events', $1)", fake)
            await db.execute("SELECT pg_notify('sse_events', $1)", note(user, n=2))
            await intruder.execute("SELECT pg_notify('sse_events', $1)", fake)
            await first_timer.execute("SELECT pg_notify('sse_events', $1)", note(user, n=3))
            await db.execute("SELECT pg_notify('sse_events', $1)", note(user, n=4))  # barrier
            got = [(await c.next_event(timeout=10)).json for _ in range(4)]
            assert got == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]
            stats = svc.service.stats
            assert stats.notifications_rejected["sender_not_allowed"] == 2
            assert b"FAKE" not in c.raw
            assert svc.service.listener.senders.held == 0
            await c.close()
    finally:
        await intruder.close()
        await first_timer.close()


async def test_a_lost_look_up_connection_renews_the_session(
        database_dsn: str, db: Conn) -> None:
    """With SSE_NOTIFY_ROLES the senders' roles are looked up on a second
    connection; if it dies, the session is made again (a reset, as for a lost
    LISTEN) instead of refusing every new sender from then on."""
    async with running(settings_for(database_dsn, SSE_NOTIFY_ROLES="@writers")) as svc:
        user = str(uuid.uuid4())
        c = await SSEClient.open(svc.port, token=token(user))
        await c.preamble()
        killed = await db.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1 AND datname = current_database()",
            LOOKUP_APPLICATION_NAME)
        assert killed == 1
        reset = await c.next_event(timeout=20)
        assert (reset.event, reset.json) == ("sync:reset", {"reason": "listen_reconnected"})
        newcomer = await asyncpg.connect(database_dsn)  # a sender not seen before
        try:  # (it stays connected until its role was looked up)
            await newcomer.execute("SELECT pg_notify('sse_events', $1)", note(user, n=1))
            assert (await c.next_event(timeout=10)).json == {"n": 1}
        finally:
            await newcomer.close()
        assert svc.service.listener.state.reconnects == 1
        await c.close()


async def test_by_default_any_role_may_notify(database_dsn: str, db: Conn,
                                              make_role: Callable[[], Any]) -> None:
    """SSE_NOTIFY_ROLES unset keeps the old behaviour (documented): the
    database's CONNECT privilege is then the only control."""
    other = await asyncpg.connect(as_role(database_dsn, await make_role()))
    try:
        async with running(settings_for(database_dsn)) as svc:
            assert svc.service.listener.senders.open
            user = str(uuid.uuid4())
            c = await SSEClient.open(svc.port, token=token(user))
            await svc.wait_streams(1)
            await other.execute("SELECT pg_notify('sse_events', $1)", note(user, n=1))
            assert (await c.next_event(timeout=10)).json == {"n": 1}
            await c.close()
    finally:
        await other.close()


@pytest.mark.slow
async def test_check_warns_while_public_may_connect(fresh_database_dsn: str) -> None:
    from tests.test_cli import cli

    result = await asyncio.to_thread(cli, "check", dsn=fresh_database_dsn)
    assert result.returncode == 0, result.stdout
    assert "warn PUBLIC may connect" in result.stdout
    assert "warn SSE_NOTIFY_ROLES is not set" in result.stdout
    admin = await asyncpg.connect(fresh_database_dsn)
    try:
        name = database_name(fresh_database_dsn)
        await admin.execute(f'REVOKE CONNECT ON DATABASE "{name}" FROM PUBLIC')
    finally:
        await admin.close()
    result = await asyncio.to_thread(cli, "check", dsn=fresh_database_dsn,
                                     SSE_NOTIFY_ROLES="@writers")
    assert result.returncode == 0, result.stdout
    assert "warn" not in result.stdout


def db_dsn(service: Running) -> str:
    return service.service.settings.database_url


FLOOD = ("SELECT count(pg_notify('sse_events', {payload})) FROM generate_series(1, 12000) g")


async def test_a_flood_of_junk_is_refused_before_it_fills_the_inbox(
        service: Running, db: Conn, make_role: Callable[[], Any]) -> None:
    """The probe's statement: 12,000 distinct junk notifications at once. They
    are refused as they are read, so the inbox (10,000) never overflows and
    nobody is reset."""
    intruder = await asyncpg.connect(as_role(db_dsn(service), await make_role()))
    try:
        user = str(uuid.uuid4())
        c = await SSEClient.open(service.port, token=token(user))
        await service.wait_streams(1)
        stats = service.service.stats
        before = stats.notifications_rejected["not_json"]
        await intruder.execute(FLOOD.format(payload="'junk ' || g"))
        await db.execute("SELECT pg_notify('sse_events', $1)", note(user, n=1))  # barrier
        assert (await c.next_event(timeout=20)).json == {"n": 1}  # no reset before it
        assert stats.notifications_rejected["not_json"] - before == 12000
        assert not stats.resets
        await c.close()
    finally:
        await intruder.close()


async def test_a_flood_of_fakes_from_a_refused_role_resets_nobody(
        database_dsn: str, db: Conn, make_role: Callable[[], Any]) -> None:
    """Valid-looking fakes from a backend not seen before: held while its role
    is looked up, the overflow dropped; once the role is known to be refused,
    none of it costs anybody a reset."""
    intruder = await asyncpg.connect(as_role(database_dsn, await make_role()))
    try:
        settings = settings_for(database_dsn, SSE_NOTIFY_ROLES="@writers", SSE_INBOX_SIZE="1000")
        async with running(settings) as svc:
            user = str(uuid.uuid4())
            c = await SSEClient.open(svc.port, token=token(user))
            await svc.wait_streams(1)
            fake = note(user, fake=True).replace("'", "''")
            await intruder.execute(FLOOD.format(payload=f"'{fake[:-1]}, \"id\": ' || g || '}}'"))
            await db.execute("SELECT pg_notify('sse_events', $1)", note(user, n=1))  # barrier
            assert (await c.next_event(timeout=20)).json == {"n": 1}
            stats = svc.service.stats
            assert stats.notifications_rejected["sender_not_allowed"] == 12000
            assert not stats.resets
            await c.close()
    finally:
        await intruder.close()


async def test_reinstalling_takes_back_what_earlier_versions_granted(
        fresh_database_dsn: str, make_role: Callable[[], Any]) -> None:
    admin = await asyncpg.connect(fresh_database_dsn)
    role = await make_role()
    try:
        # What the previous install.sql granted to PUBLIC.
        await admin.execute("""
            GRANT USAGE, SELECT ON SEQUENCE sse.dropped_events TO PUBLIC;
            GRANT USAGE ON SEQUENCE sse.event_id TO PUBLIC;
            GRANT EXECUTE ON FUNCTION sse.send(text, text, uuid[]),
                sse.emit(text, uuid[], jsonb) TO PUBLIC;
            ALTER FUNCTION sse.on_item_update() SECURITY INVOKER RESET ALL""")
        await sqlinstall.install(admin)
        conn = await asyncpg.connect(as_role(fresh_database_dsn, role))
        try:
            for statement in DENIED:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
        finally:
            await conn.close()
        assert await admin.fetchval(
            "SELECT prosecdef AND proconfig = '{\"search_path=pg_catalog, pg_temp\"}'"
            " FROM pg_proc WHERE oid = 'sse.on_item_update()'::regprocedure")
    finally:
        await admin.close()
