"""The CPU time of the PostgreSQL backend that serves one connection.

``bench triggers`` measures what the triggers cost the core API's backend
directly: far steadier than an update rate, and blind to the client and to
the machine's other load. It needs PostgreSQL on the same host.
"""

from __future__ import annotations

from sse_service.bench.common import Conn
from sse_service.bench.machine import cpu_times


class BackendCpu:
    """CPU seconds used so far by the PostgreSQL backend of one connection."""

    def __init__(self, pid: int, source: str) -> None:
        self.pid, self.source = pid, source

    @classmethod
    async def find(cls, conn: Conn, dbname: str) -> BackendCpu | None:
        """The backend of ``conn`` if it runs on this host, else None.

        A pid from another host (or another pid namespace) may name some
        unrelated local process: only a process whose title names our
        database, which has a random name, is taken for the backend."""
        pid: int = await conn.fetchval("SELECT pg_backend_pid()")
        title = _process_title(pid)
        if title is None or dbname not in title:
            return None
        backend = cls(pid, "schedstat")
        try:
            backend.source = "schedstat" if backend._schedstat() > 0 else "stat"
        except (OSError, ValueError, IndexError):
            backend.source = "stat"
        return backend

    def _schedstat(self) -> float:
        with open(f"/proc/{self.pid}/schedstat", encoding="ascii") as f:
            return int(f.read().split()[0]) / 1e9

    def seconds(self) -> float | None:
        """CPU seconds so far (None once the process is unreadable)."""
        try:
            if self.source == "schedstat":
                return self._schedstat()
            user, system = cpu_times(self.pid)
            return user + system
        except (OSError, ValueError, IndexError):
            return None


def _process_title(pid: int) -> str | None:
    """The command line (process title) of local process ``pid``, if readable."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None
