"""Install and uninstall the service's database objects (``sql/``).

The scripts live at the top of the repository so that an operator can also
run them with ``psql -f``; this module is the same thing for the CLI and the
tests. Both scripts are idempotent and run in one transaction each.
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


class _Executor(Protocol):
    async def execute(self, query: str, *args: object) -> str: ...

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


async def install(conn: _Executor, channel: str = "sse_events") -> None:
    """Create or update the triggers, then point them at ``channel``."""
    await _run_script(conn, INSTALL_SQL)
    # A fresh install notifies the default channel until this line runs.
    await conn.execute("SELECT sse.set_channel($1)", channel)


async def uninstall(conn: _Executor) -> None:
    """Remove every object :func:`install` created, and nothing else."""
    await _run_script(conn, UNINSTALL_SQL)
