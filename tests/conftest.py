"""Shared fixtures: a real PostgreSQL database with the core API's schema.

Each test run creates its own database (``sse_test_<random>``), loads the
package's copy of the core API's schema (``sse_service/data/wishwithme-schema.sql``)
into it, installs ``sql/install.sql`` and drops it at the end. The server is
the one named by ``SSE_TEST_PG_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``); when none answers a
private cluster is started from the PostgreSQL binaries.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from sse_service import scratchdb
from sse_service.scratchdb import CORE_SCHEMA, PrivateCluster, drop_database, server_answers

if TYPE_CHECKING:
    from tests.harness import ChannelSync

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_SQL = CORE_SCHEMA
DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI (``CI=true``, as CI runs .ci/run) a test may not skip for want of
    a tool that .ci/run installs (its skip reason names .ci/run): that is a
    broken set-up, so the test fails instead of passing unnoticed. On a
    developer's machine it skips, saying what to install."""
    outcome: Any = yield
    report = outcome.get_result()
    if (os.environ.get("CI") == "true" and report.skipped and call.when == "setup"
            and ".ci/run" in str(report.longrepr)):
        report.outcome = "failed"
        report.longrepr = f"CI must not skip this test: {report.longrepr}"


async def create_database(admin_dsn: str, *, install: bool = True) -> str:
    """A new database with the core API's schema (and our triggers); its DSN."""
    return await scratchdb.create_database(admin_dsn, install=install, channel="sse_events",
                                           prefix="sse_test_")


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """DSN of a superuser connection to a running PostgreSQL server."""
    dsn = os.environ.get("SSE_TEST_PG_DSN", DEFAULT_ADMIN_DSN)
    parts = urlsplit(dsn)
    if server_answers(parts.hostname or "127.0.0.1", parts.port or 5432):
        yield dsn
        return
    cluster = PrivateCluster()
    cluster.start()
    try:
        yield cluster.dsn
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def database_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """The run's own database: schema loaded, triggers installed, dropped at the end."""
    dsn = asyncio.run(create_database(pg_admin_dsn))
    try:
        yield dsn
    finally:
        asyncio.run(drop_database(pg_admin_dsn, dsn))


@pytest.fixture
async def fresh_database_dsn(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A database of the test's own, for tests that change what is installed."""
    dsn = await create_database(pg_admin_dsn)
    try:
        yield dsn
    finally:
        await drop_database(pg_admin_dsn, dsn)


@pytest.fixture
async def db(database_dsn: str) -> AsyncIterator[Any]:
    """A connection playing the core API: it writes rows with plain SQL."""
    conn = await asyncpg.connect(database_dsn)
    try:
        yield conn
    finally:
        await conn.close()


class NotificationLog:
    """Every NOTIFY payload on a channel, decoded, in arrival order."""

    def __init__(self) -> None:
        self.raw: list[str] = []
        self._sync: ChannelSync | None = None

    def callback(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.raw.append(payload)

    @property
    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.raw]

    def events_for(self, user: str) -> list[tuple[str, dict[str, Any]]]:
        """(event, data) pairs whose recipients include ``user``."""
        return [(p["event"], p["data"]) for p in self.payloads if user in p["users"]]

    async def listen(self, conn: Any, channel: str = "sse_events") -> None:
        """LISTEN on ``channel`` with ``conn``, which :meth:`settle` then syncs with."""
        from tests.harness import ChannelSync

        self._sync = await ChannelSync.on(conn)
        await conn.add_listener(channel, self.callback)

    async def settle(self) -> None:
        """Until every notification committed so far has arrived (a barrier on a
        channel of the test's own, not a quiet period)."""
        if self._sync is None:
            raise RuntimeError("settle() needs listen()")
        await self._sync()

    def clear(self) -> None:
        self.raw.clear()


@pytest.fixture
async def notifications(database_dsn: str) -> AsyncIterator[NotificationLog]:
    """LISTEN on the default channel with a connection of the test's own."""
    log = NotificationLog()
    conn = await asyncpg.connect(database_dsn)
    await log.listen(conn)
    try:
        yield log
    finally:
        await conn.close()


@pytest.fixture
async def service(database_dsn: str) -> AsyncIterator[Any]:
    """The service on a real socket, listening on the run's database."""
    from tests.harness import running, settings_for

    async with running(settings_for(database_dsn)) as svc:
        yield svc
