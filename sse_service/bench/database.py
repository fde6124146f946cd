"""The benchmark's database helpers; creating and dropping its throw-away
databases is :mod:`sse_service.scratchdb`'s, shared with the tests and the demo.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg

from sse_service.bench.common import BenchError, Conn
from sse_service.scratchdb import create_database, database_name, drop_database, with_database

__all__ = ["backend_pids", "create_database", "database_name", "delete_users",
           "drop_database", "postgres_version", "read_schema", "with_database"]


def read_schema(schema: Path) -> str:
    """The core API schema's SQL; a BenchError naming ``--schema`` when unreadable."""
    try:
        return schema.read_text(encoding="utf-8")
    except OSError as exc:
        raise BenchError(f"cannot read the core API schema {schema} (use --schema): "
                         f"{exc}") from None


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
