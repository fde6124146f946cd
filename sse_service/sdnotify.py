"""A tiny sd_notify(3) client: tell systemd we are ready, stopping, alive.

systemd passes ``NOTIFY_SOCKET`` (a filesystem path, or ``@name`` for an
abstract socket) to ``Type=notify`` services; each message is one datagram of
``KEY=VALUE`` lines. Without ``NOTIFY_SOCKET`` (not under systemd, or in tests)
every call is a no-op. Sending never raises: a failure is logged once and the
service carries on, since a lost status line must not take the service down.

The watchdog (``WatchdogSec=`` sets ``WATCHDOG_USEC``) is pinged at half the
interval from a task on the event loop, so a loop that stalls stops the pings
and systemd restarts the service.

Like the rest of the service, this module reads no process environment: the
CLI hands it ``os.environ``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger("sse_service.sdnotify")


class Notifier:
    """Sends state changes to the service manager named by ``env["NOTIFY_SOCKET"]``."""

    def __init__(self, env: Mapping[str, str], *, pid: int | None = None) -> None:
        self.pid = os.getpid() if pid is None else pid
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = _watchdog_interval(env, self.pid)  # seconds between pings
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields as one message; whether it went out."""
        if self.address is None:
            return False
        message = "\n".join(field.replace("\n", " ") for field in fields).encode()
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.setblocking(False)  # never stall the event loop on a full queue
                self._sock = sock
            # Unconnected: a service manager that re-executed itself re-bound the path.
            self._sock.sendto(message, self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify the service manager (%s): %s; "
                            "further failures are not logged", _show(self.address), exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up finished: systemd marks the unit active (``Type=notify``)."""
        fields = ["READY=1", f"MAINPID={self.pid}"]
        if status is not None:
            fields.append(f"STATUS={status}")
        return self.send(*fields)

    def status(self, text: str) -> bool:
        """Free-form status, shown by ``systemctl status``."""
        return self.send(f"STATUS={text}")

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun (systemd shows the unit as deactivating)."""
        fields = ["STOPPING=1"]
        if status is not None:
            fields.append(f"STATUS={status}")
        return self.send(*fields)

    def mainpid(self, pid: int) -> bool:
        """Tell systemd which process is the service's main process."""
        return self.send(f"MAINPID={pid}")

    def watchdog(self) -> bool:
        """One keep-alive ping."""
        return self.send("WATCHDOG=1")

    async def watchdog_loop(self, status: Callable[[], str] | None = None) -> None:
        """Ping every ``watchdog_interval`` seconds until cancelled (returns at once
        without a watchdog). ``status``, if given, refreshes STATUS= with each ping."""
        interval = self.watchdog_interval
        if interval is None or self.address is None:
            return
        while True:
            if status is None:
                self.send("WATCHDOG=1")
            else:
                self.send("WATCHDOG=1", f"STATUS={status()}")
            await asyncio.sleep(interval)

    def start_watchdog(self, status: Callable[[], str] | None = None
                       ) -> asyncio.Task[None] | None:
        """The watchdog task on the running loop, or None when systemd wants none."""
        if self.watchdog_interval is None or self.address is None:
            return None
        return asyncio.create_task(self.watchdog_loop(status), name="sse-watchdog")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _address(raw: str) -> str | bytes | None:
    if not raw:
        return None
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()  # Linux abstract namespace
    if raw.startswith("/"):
        return raw
    log.warning("ignoring NOTIFY_SOCKET %r: only absolute paths and @abstract names "
                "are supported", raw)
    return None


def _watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    raw = env.get("WATCHDOG_USEC", "")
    if not raw:
        return None
    watchdog_pid = env.get("WATCHDOG_PID", "")
    if watchdog_pid and watchdog_pid != str(pid):
        return None  # the watchdog is meant for another process
    try:
        usec = int(raw)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC %r: not a whole number", raw)
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


def _show(address: str | bytes) -> str:
    if isinstance(address, bytes):
        return "@" + address[1:].decode(errors="replace")
    return address
