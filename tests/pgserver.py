"""PostgreSQL servers for the tests: the machine's own, or a private cluster.

The suite prefers the server named by ``SSE_TEST_PG_DSN`` (default: the local
server on 127.0.0.1:5432 with trust auth). When none answers it starts a
private cluster from the PostgreSQL binaries, which fault tests also use when
they need a server they may stop and restart.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _bindir() -> Path:
    for name in ("pg_ctl", "initdb"):
        found = shutil.which(name)
        if found:
            return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    if not candidates:
        raise RuntimeError(
            "no PostgreSQL server answers and no PostgreSQL binaries (initdb, pg_ctl) "
            "were found: install Debian's 'postgresql' package or set SSE_TEST_PG_DSN"
        )
    return Path(candidates[0]).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateCluster:
    """A throw-away PostgreSQL cluster on a free port, owned by the tests.

    ``stop()``/``start()`` give the fault tests a real server restart. When the
    tests run as root the cluster runs as the ``postgres`` system user, because
    PostgreSQL refuses to run as root.
    """

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self.dir = Path(tempfile.mkdtemp(prefix="sse-test-pg-"))
        if self._as_user:
            shutil.chown(self.dir, "postgres")
        self.datadir = self.dir / "data"
        self.logfile = self.dir / "server.log"
        self._run(
            [str(self.bindir / "initdb"), "-D", str(self.datadir), "-A", "trust",
             "-U", "postgres", "--no-sync", "-E", "UTF8"]
        )

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
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def server_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server_answers(host, port, 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not answer within {timeout} s")
