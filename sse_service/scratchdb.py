"""Throw-away PostgreSQL databases and clusters, with the core API's schema.

One place for what the tests, ``sse-service bench`` and ``sse-service demo``
share: a database ``<prefix><random>`` created on a server (which needs
CREATEDB) with the core schema loaded and, optionally, the triggers
installed, dropped again at the end; and a private cluster started from the
PostgreSQL binaries when no server is at hand. The serving process never
imports this module.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from sse_service import sqlinstall

CORE_SCHEMA = Path(__file__).resolve().parent / "data" / "wishwithme-schema.sql"
"""The package's copy of the core API's schema (see the file's header)."""


def with_database(dsn: str, dbname: str) -> str:
    """``dsn`` pointed at another database on the same server."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + dbname))


def database_name(dsn: str) -> str:
    """The database that ``dsn`` points at."""
    return urlsplit(dsn).path.lstrip("/")


async def create_database(admin_dsn: str, schema_sql: str | None = None, *, install: bool,
                          channel: str = "sse_events", prefix: str = "sse_scratch_") -> str:
    """A new database ``<prefix><random>`` with the core schema (and the triggers); its DSN.

    ``schema_sql`` defaults to :data:`CORE_SCHEMA`.
    """
    if schema_sql is None:
        schema_sql = CORE_SCHEMA.read_text(encoding="utf-8")
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


def _bindir() -> Path:
    for name in ("pg_ctl", "initdb"):
        found = shutil.which(name)
        if found:
            return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    if not candidates:
        raise RuntimeError(
            "no PostgreSQL server answers and no PostgreSQL binaries (initdb, pg_ctl) "
            "were found: install Debian's 'postgresql' package or name a server"
        )
    return Path(candidates[0]).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateCluster:
    """A throw-away PostgreSQL cluster on a free port, trust auth, on 127.0.0.1.

    ``stop()``/``start()`` give the fault tests a real server restart. Run as
    root, the cluster runs as the ``postgres`` system user, because PostgreSQL
    refuses to run as root.
    """

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self.dir = Path(tempfile.mkdtemp(prefix="sse-pg-"))
        if self._as_user:
            shutil.chown(self.dir, "postgres")
        self.datadir = self.dir / "data"
        self.logfile = self.dir / "server.log"
        try:
            self._run(
                [str(self.bindir / "initdb"), "-D", str(self.datadir), "-A", "trust",
                 "-U", "postgres", "--no-sync", "-E", "UTF8"]
            )
        except BaseException:  # a failed or interrupted initdb leaves nothing behind
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def _run(self, cmd: list[str]) -> None:
        subprocess.run(self._as_user + cmd, check=True, capture_output=True, timeout=120)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir}"
        opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l",
                   str(self.logfile), "-o", opts, "-w", "-t", "60", "start"])

    def stop(self, mode: str = "fast") -> None:
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode,
                   "-w", "-t", "60", "stop"])

    def destroy(self) -> None:
        """Stop the server (at once) and delete its files."""
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def server_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
