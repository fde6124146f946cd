"""``sse-service demo``: the whole system on a machine that has nothing set up.

It starts a private, throw-away PostgreSQL cluster from the Debian binaries,
loads the core schema, a small sample (two users, the first one's wishlist
shared with the second, a few items) and the triggers, serves the service
with a demo page on 127.0.0.1, and prints the page's URL and both users'
tokens. Ctrl-C (or SIGTERM) stops the service and the cluster and deletes the
cluster's directory.

This module is only the command: ``serve`` builds the same argument parser,
so everything heavier is imported when the demo actually runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sse_service.demo_server import Running
    from sse_service.scratchdb import PrivateCluster

EX_INTERRUPTED = 130  # Ctrl-C before the demo was up
LOG_LEVEL = "INFO"  # the access log shows each button's request and each stream


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``demo`` subcommand's options."""
    parser.add_argument("--port", type=_port, default=0,
                        help="port to serve on, on 127.0.0.1 (default: a free one)")


def _port(raw: str) -> int:
    port = int(raw)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port between 0 and 65535, got {port}")
    return port


def main(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run the demo until a signal; the exit code (0 when stopped by a signal).

    ``env`` is not consulted: the demo's settings are all its own (a database
    it creates, a key it draws, 127.0.0.1), so that an ``SSE_*`` left in the
    shell for a real deployment cannot change what a newcomer sees.
    """
    del env
    from sse_service import demo_server, logs

    logs.setup(LOG_LEVEL)
    cluster: PrivateCluster | None = None
    try:
        print("starting a private PostgreSQL cluster ...", flush=True)
        cluster = demo_server.new_cluster()
        cluster.start()
        return asyncio.run(demo_server.run(cluster.dsn, args.port, LOG_LEVEL, _banner(cluster)))
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    except RuntimeError as exc:  # no PostgreSQL binaries
        print(f"sse-service: {exc}", file=sys.stderr)
        return 69  # EX_UNAVAILABLE, as the CLI's
    finally:
        if cluster is not None:
            cluster.destroy()
            print(f"removed the PostgreSQL cluster in {cluster.dir}", flush=True)


def _banner(cluster: PrivateCluster) -> Callable[[Running], None]:
    def announce(running: Running) -> None:
        owner, viewer = running.sample.owner, running.sample.viewer
        lines = [
            "",
            f"sse-service demo is running: open {running.url}",
            "",
            f"  owner   {owner.name:<6} user id {owner.id}",
            f"          token  {running.tokens['owner']}",
            f"  viewer  {viewer.name:<6} user id {viewer.id}",
            f"          token  {running.tokens['viewer']}",
            "",
            "  a stream by hand:  curl -N -H 'Authorization: Bearer <token>' "
            + running.stream_url,
            f"  the database:      psql {running.dsn}",
            f"  cluster directory: {cluster.dir}",
            "",
            "Press Ctrl-C to stop; the cluster and its directory are removed.",
            "",
        ]
        print("\n".join(lines), flush=True)

    return announce
