"""Where the service listens: its TCP address and, optionally, a Unix socket.

nginx on the same host can reach the service over the Unix socket instead of
loopback TCP. Every event is one ``send()`` per stream, and on a Unix socket
that system call costs the service less than half of what loopback TCP does
(docs/performance.md), because it skips the TCP/IP stack that loopback runs
on both ends in the sender's time.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from sse_service import connections, logs
from sse_service.settings import Settings

log = logging.getLogger("sse_service.sites")


class SiteError(OSError):
    """An address the service cannot serve on; the message names it."""


def address_text(address: object) -> str:
    """``host:port`` (``[v6]:port``) of a (host, port, ...) tuple; a socket path as it is."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


def tcp_address(settings: Settings) -> str:
    return address_text((settings.host, settings.port))


@contextlib.asynccontextmanager
async def serving(runner: web.AppRunner, settings: Settings) -> AsyncIterator[None]:
    """Serve on ``SSE_HOST:SSE_PORT`` and, if set, ``SSE_UNIX_SOCKET`` while the block runs.

    Every connection gets the bounded protocol of :mod:`sse_service.connections`,
    and accepting pauses for a second whenever the process runs out of file
    descriptors (logged at most every 10 s). Raises :class:`SiteError` if an
    address cannot be bound. On the way out the socket file this process
    created is removed, so that no stale file remains (the listening sockets
    themselves close with the runner's cleanup).
    """
    server = runner.server
    if server is None:
        raise RuntimeError("serving() needs a runner that is set up")
    factory = connections.protocol_factory(server, settings)
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(_AcceptErrors(previous))
    created: Path | None = None
    try:
        try:
            for sock in await _tcp_sockets(settings.host, settings.port):
                await _Site(runner, sock, factory, settings.backlog).start()
        except OSError as exc:
            raise SiteError(f"cannot serve on {tcp_address(settings)}: {exc}") from exc
        if settings.unix_socket is not None:
            path = Path(settings.unix_socket)
            await _start_unix(runner, path, settings, factory)
            created = path
        yield
    finally:
        loop.set_exception_handler(previous)
        if created is not None:
            with contextlib.suppress(OSError):
                created.unlink()


class _Site(web.SockSite):
    """A site on a socket of ours, with the service's protocol factory."""

    __slots__ = ("_factory",)

    def __init__(self, runner: web.AppRunner, sock: socket.socket,
                 factory: Callable[[], asyncio.Protocol], backlog: int) -> None:
        super().__init__(runner, sock, backlog=backlog)
        self._factory = factory

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        self._server = await asyncio.get_running_loop().create_server(
            self._factory, sock=self._sock, backlog=self._backlog)


# accept() errors after which asyncio stops accepting for a second.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _ListeningSocket(socket.socket):
    """A listening socket whose accept() reports running out of descriptors once.

    On EMFILE, asyncio (3.11) stops watching the socket and retries a second
    later, but its accept loop goes on calling accept() up to ``backlog`` times,
    each failing, each logged and each scheduling one more retry: thousands of
    ERROR lines a second. The first failure of a batch is raised (asyncio then
    pauses); the rest of the batch reads as "nothing to accept".
    """

    __slots__ = ("_failed",)

    def __init__(self, family: int, kind: int, proto: int = 0) -> None:
        super().__init__(family, kind, proto)
        self._failed = False

    def accept(self) -> tuple[socket.socket, Any]:
        if self._failed:
            raise BlockingIOError(errno.EAGAIN, "accepting is paused")
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno in _OUT_OF_RESOURCES:
                self._failed = True
                asyncio.get_running_loop().call_soon(self._clear)  # after this batch
            raise

    def _clear(self) -> None:
        self._failed = False


class _AcceptErrors:
    """The loop's exception handler: asyncio's accept failures as one rate-limited line."""

    def __init__(self, previous: Any) -> None:
        self._previous = previous
        self._limited = logs.RateLimited(log, interval=10.0)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if (isinstance(exc, OSError) and exc.errno in _OUT_OF_RESOURCES
                and "socket" in context):
            self._limited.warning("accept", "cannot accept connections (%s): accepting "
                                  "pauses for a second at a time", exc.strerror)
        elif self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)


async def _tcp_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound TCP sockets for every address of ``host``, as asyncio's create_server makes them."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = _ListeningSocket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError:
        for made in sockets:
            made.close()
        raise
    return sockets


async def _start_unix(runner: web.AppRunner, path: Path, settings: Settings,
                      factory: Callable[[], asyncio.Protocol]) -> None:
    _check_free(path)  # local and quick: no need to leave the event loop
    try:
        sock = _bind_unix(path, settings.unix_socket_mode)
    except OSError as exc:
        raise SiteError(f"cannot serve on {path}: {exc}") from exc
    try:
        await _Site(runner, sock, factory, settings.backlog).start()
    except OSError as exc:
        sock.close()
        raise SiteError(f"cannot serve on {path}: {exc}") from exc


def _bind_unix(path: Path, mode: int) -> socket.socket:
    sock = _ListeningSocket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a stale socket file (_check_free refused anything else)
        sock.bind(str(path))
        # The umask (systemd's UMask=0077) leaves the socket to its owner; nginx
        # needs the configured mode (0660 and a shared group, by default).
        os.chmod(path, mode)
    except OSError:
        sock.close()
        raise
    return sock


def _check_free(path: Path) -> None:
    """Refuse a path that is not a socket, or a socket that another process serves.

    asyncio replaces an existing socket file without asking: a second instance
    started by mistake would silently take the first one's socket away.
    """
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SiteError(f"cannot serve on {path}: {exc}") from exc
    if not stat.S_ISSOCK(mode):
        raise SiteError(f"cannot serve on {path}: it exists and is not a socket")
    if _answers(path):
        raise SiteError(f"cannot serve on {path}: another process serves there")


def _answers(path: Path) -> bool:
    """Whether something accepts connections on the socket file ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False  # a stale file from a process that is gone
        return True
