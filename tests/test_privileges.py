"""Least privilege, end to end: the recipe of the operations docs, on a real server.

Three roles, none a superuser: a table owner that owns the core tables (it
creates the schema in a fresh database it owns) and runs ``install-sql``; the
core API's application role with DML grants only, whose writes fire the
triggers (which run as that role); and the service's role with LOGIN and
CONNECT and nothing else, which serves (LISTEN and its probe), runs ``check``
and ``send``. Every other test runs as a superuser and would not notice a
missing grant.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from sse_service.scratchdb import CORE_SCHEMA, with_database
from tests import factories
from tests.harness import running, settings_for, token
from tests.sseclient import SSE, SSEClient
from tests.test_cli import cli

# As a superuser (or a role with CREATEROLE and CREATEDB), once. {owner},
# {app}, {service} and {db} are the names the operations docs call
# wishwithme_owner, wishwithme_app, sse_service and wishwithme.
SETUP_AS_ADMIN = [
    "CREATE ROLE {owner} LOGIN",
    "CREATE ROLE {app} LOGIN",
    "CREATE ROLE {service} LOGIN",
    "CREATE DATABASE {db} OWNER {owner}",
    "REVOKE ALL ON DATABASE {db} FROM PUBLIC",
    "GRANT CONNECT ON DATABASE {db} TO {app}, {service}",
]
# As the owner, in the database, once its schema exists (the core API's migrations).
GRANTS_AS_OWNER = """
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO {app};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app};
"""


@dataclass
class Roles:
    owner: str
    app: str
    service: str
    db: str
    admin_dsn: str

    def dsn(self, role: str) -> str:
        """The admin's server and the recipe's database, as ``role`` (trust auth)."""
        parts = urlsplit(with_database(self.admin_dsn, self.db))
        host = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit(parts._replace(netloc=f"{role}@{host}"))

    @property
    def names(self) -> dict[str, str]:
        return {"owner": self.owner, "app": self.app, "service": self.service, "db": self.db}


@pytest.fixture
async def roles(pg_admin_dsn: str) -> AsyncIterator[Roles]:
    """The recipe's roles and database, with the core schema created by the owner."""
    suffix = uuid.uuid4().hex[:10]
    r = Roles(f"sse_t_owner_{suffix}", f"sse_t_app_{suffix}", f"sse_t_service_{suffix}",
              f"sse_test_priv_{suffix}", pg_admin_dsn)
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        for statement in SETUP_AS_ADMIN:
            await admin.execute(statement.format(**r.names))
        owner = await asyncpg.connect(r.dsn(r.owner))
        try:
            await owner.execute(CORE_SCHEMA.read_text(encoding="utf-8"))
            await owner.execute(GRANTS_AS_OWNER.format(**r.names))
        finally:
            await owner.close()
        yield r
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {r.db} WITH (FORCE)")
        for role in (r.owner, r.app, r.service):
            await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


async def until(client: SSEClient, event: str) -> list[SSE]:
    """Every event up to and including the first named ``event``."""
    seen: list[SSE] = []
    while not seen or seen[-1].event != event:
        seen.append(await client.next_event(timeout=15))
    return seen


async def test_least_privilege_roles_end_to_end(roles: Roles) -> None:
    # The owner installs the triggers; neither other role can.
    result = cli("install-sql", dsn=roles.dsn(roles.owner), SSE_JWT_KEY="")
    assert result.returncode == 0, result.stderr
    for role in (roles.app, roles.service):
        result = cli("install-sql", dsn=roles.dsn(role), SSE_JWT_KEY="")
        assert result.returncode == 69, result.stderr
        assert "refused: InsufficientPrivilegeError" in result.stderr

    # The service's role: check passes, and it has nothing but what PUBLIC has.
    result = cli("check", dsn=roles.dsn(roles.service))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok  ") == 5
    svc = await asyncpg.connect(roles.dsn(roles.service))
    try:
        for statement in ("SELECT 1 FROM public.items", "SELECT 1 FROM public.users",
                          "CREATE TEMP TABLE t (x int)", "SELECT sse.set_channel('other')",
                          "CREATE SCHEMA s", "CREATE TABLE sse.t (x int)"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await svc.execute(statement)
    finally:
        await svc.close()

    app: Any = await asyncpg.connect(roles.dsn(roles.app))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app.execute("CREATE TABLE public.t (x int)")
        async with running(settings_for(roles.dsn(roles.service))) as service:
            await _writes_by_the_app_role_reach_the_streams(roles, app, service.port)
    finally:
        await app.close()


async def _writes_by_the_app_role_reach_the_streams(roles: Roles, app: Any, port: int) -> None:
    warnings: list[str] = []  # a trigger that fails logs a WARNING, never fails the write
    app.add_log_listener(lambda _conn, message: warnings.append(str(message)))
    owner, viewer = await factories.user(app), await factories.user(app)
    streams = {u: await SSEClient.open(port, token=token(u)) for u in (owner, viewer)}
    try:
        wl = await factories.wishlist(app, owner)
        await factories.bookmark(app, viewer, wl)
        item = await factories.item(app, wl)
        await factories.mark(app, item, viewer)
        await app.execute("UPDATE items SET status = 'RESOLVED', updated_at = now() "
                          "WHERE id = $1", uuid.UUID(item))
        # The sentinel, sent by the service's own role.
        result = await asyncio.to_thread(cli, "send", "test:sentinel", owner, viewer,
                                         dsn=roles.dsn(roles.service), SSE_JWT_KEY="")
        assert result.returncode == 0, result.stderr
        got = {u: [e.event for e in await until(c, "test:sentinel")]
               for u, c in streams.items()}
        assert got[owner] == ["wishlists:updated", "items:updated", "items:resolved",
                              "test:sentinel"]
        assert got[viewer] == ["wishlists:updated", "items:updated", "marks:updated",
                               "items:updated", "test:sentinel"]

        # Deletes (the wishlist's announces its items, as the cascade's triggers cannot).
        await app.execute("DELETE FROM marks WHERE item_id = $1", uuid.UUID(item))
        await app.execute("DELETE FROM wishlists WHERE id = $1", uuid.UUID(wl))
        result = await asyncio.to_thread(cli, "send", "test:sentinel", owner, viewer,
                                         dsn=roles.dsn(roles.service), SSE_JWT_KEY="")
        assert result.returncode == 0, result.stderr
        got = {u: [e.event for e in await until(c, "test:sentinel")]
               for u, c in streams.items()}
        assert got[owner] == ["wishlists:updated", "items:updated", "test:sentinel"]
        assert got[viewer] == ["marks:updated", "wishlists:updated", "items:updated",
                               "test:sentinel"]
        assert not warnings  # no trigger failed for want of a privilege

        # Only the triggers may count a drop: the writer's role cannot by itself.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app.execute("SELECT nextval('sse.dropped_events')")
        # The triggers' drop path (a NOTIFY queue "full": the owner sets the limit
        # to 0) counts it while the writer's role writes; the service's probe reads
        # the count as its own role and resets the streams.
        table_owner = await asyncpg.connect(roles.dsn(roles.owner))
        try:
            await table_owner.execute("CREATE OR REPLACE FUNCTION sse.queue_limit()"
                                      " RETURNS double precision LANGUAGE sql IMMUTABLE"
                                      " AS 'SELECT 0::double precision'")
        finally:
            await table_owner.close()
        await factories.wishlist(app, owner)
        for client in streams.values():
            reset = (await until(client, "sync:reset"))[-1]
            assert reset.json == {"reason": "events_dropped"}
    finally:
        for client in streams.values():
            await client.close()
