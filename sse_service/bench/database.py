"""The benchmark's databases: a fresh ``sse_bench_<random>`` with the core schema.

Created on the admin DSN's server (which needs CREATEDB), dropped again at
the end, so that a run leaves nothing behind.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from sse_service import sqlinstall
from sse_service.bench.common import BenchError, Conn


def with_database(dsn: str, dbname: str) -> str:
    """``dsn`` pointed at another database on the same server."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + dbname))


def database_name(dsn: str) -> str:
    """The database that ``dsn`` points at."""
    return urlsplit(dsn).path.lstrip("/")


def read_schema(schema: Path) -> str:
    """The core API schema's SQL; a BenchError naming ``--schema`` when unreadable."""
    try:
        return schema.read_text(encoding="utf-8")
    except OSError as exc:
        raise BenchError(f"cannot read the core API schema {schema} (use --schema): "
                         f"{exc}") from None


async def create_database(admin_dsn: str, schema_sql: str, *, install: bool,
                          channel: str, prefix: str = "sse_bench_") -> str:
    """A new database ``<prefix><random>`` with the core schema (and triggers)."""
    name = prefix + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = with_database(admin_dsn, name)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(schema_sql)
            if install:
                await sqlinstall.install(conn, channel)
        finally:
            await conn.close()
    except BaseException:
        await drop_database(admin_dsn, dsn)
        raise
    return dsn


async def drop_database(admin_dsn: str, dsn: str) -> None:
    """Drop the database of ``dsn`` (even with sessions still in it)."""
    name = database_name(dsn)
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def delete_users(dsn: str, user_ids: list[str]) -> None:
    """Delete the benchmark's users (and so their rows) from a database we did not create."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM users WHERE id = ANY($1::uuid[])", user_ids)
    finally:
        await conn.close()


async def postgres_version(dsn: str) -> str | None:
    """The server's version string."""
    conn = await asyncpg.connect(dsn)
    try:
        version: str = await conn.fetchval("SHOW server_version")
        return version
    finally:
        await conn.close()


async def backend_pids(conn: Conn) -> list[int]:
    """Server processes of the benchmark's database (listener, writers)."""
    rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    return [r["pid"] for r in rows]
