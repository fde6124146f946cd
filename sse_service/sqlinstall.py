"""Install and uninstall the service's database objects (``sql/``).

The scripts live at the top of the repository so that an operator can also
run them with ``psql -f``; this module is the same thing for the CLI and the
tests. Both scripts are idempotent and run in one transaction each.

Supported servers: PostgreSQL 14 and later (tested on 15). ``install.sql``
uses ``CREATE OR REPLACE TRIGGER`` (new in 14); :func:`install` refuses an
older server with a message that says so, before it changes anything.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Protocol


def _sql_dir() -> Path:
    """``sql/`` of the checkout (source or editable install), else the copy that a
    regular install puts under ``<prefix>/share/sse-service/sql``."""
    candidates = (Path(__file__).resolve().parent.parent / "sql",
                  Path(sys.prefix) / "share" / "sse-service" / "sql")
    for candidate in candidates:
        if (candidate / "install.sql").is_file():
            return candidate
    return candidates[0]


SQL_DIR = _sql_dir()
INSTALL_SQL = SQL_DIR / "install.sql"
UNINSTALL_SQL = SQL_DIR / "uninstall.sql"


MIN_SERVER_VERSION = 140000
"""The oldest PostgreSQL the scripts run on, as ``server_version_num``."""


class UnsupportedServer(RuntimeError):
    """The PostgreSQL server is older than :data:`MIN_SERVER_VERSION`."""


def check_server_version(version_num: int, minimum: int = MIN_SERVER_VERSION) -> None:
    """Raise :class:`UnsupportedServer` unless ``version_num`` (PostgreSQL's
    ``server_version_num``, e.g. 150020) is at least ``minimum``."""
    if version_num < minimum:
        raise UnsupportedServer(
            f"PostgreSQL {_version_text(version_num)} is too old: sse-service's SQL needs "
            f"PostgreSQL {_version_text(minimum)} or later (CREATE OR REPLACE TRIGGER)")


def _version_text(version_num: int) -> str:
    # From 10 on, server_version_num is major * 10000 + minor.
    major, minor = divmod(version_num, 10000)
    if major >= 10:
        return f"{major}.{minor}" if minor else str(major)
    return f"{major}.{minor // 100}"


class _Executor(Protocol):
    async def execute(self, query: str, *args: object) -> str: ...

    async def fetchval(self, query: str, *args: object) -> object: ...

    def is_in_transaction(self) -> bool: ...


async def _run_script(conn: _Executor, path: Path) -> None:
    try:
        await conn.execute(_read(path))
    except BaseException:
        # The script's own BEGIN is still open after a failure part-way (a lock
        # timeout, say); leave the connection usable.
        if conn.is_in_transaction():
            await conn.execute("ROLLBACK")
        raise


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} is missing: install sse-service from its repository"
        ) from None


async def server_version(conn: _Executor) -> int:
    """The server's ``server_version_num`` (e.g. 150020 for 15.20)."""
    value = await conn.fetchval("SELECT current_setting('server_version_num')::int")
    if not isinstance(value, int):
        raise TypeError(f"server_version_num is not a number: {value!r}")
    return value


async def install(conn: _Executor, channel: str = "sse_events", *,
                  minimum_version: int = MIN_SERVER_VERSION) -> None:
    """Create or update the triggers, then point them at ``channel``.

    Raises :class:`UnsupportedServer`, having changed nothing, on a server older
    than ``minimum_version``.
    """
    check_server_version(await server_version(conn), minimum_version)
    await _run_script(conn, INSTALL_SQL)
    # A fresh install notifies the default channel until this line runs.
    await conn.execute("SELECT sse.set_channel($1)", channel)


async def uninstall(conn: _Executor) -> None:
    """Remove every object :func:`install` created, and nothing else."""
    await _run_script(conn, UNINSTALL_SQL)
