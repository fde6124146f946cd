"""``sse-service bench``: measure what one service process can carry.

Two benchmarks, each printing ONE JSON object on stdout (progress goes to
stderr):

``bench fanout`` (:mod:`.fanout`)
    Starts the service as a separate process (``python -m sse_service serve``
    on a free port, on a fresh database ``sse_bench_<random>`` that it creates
    and drops) -- or targets a running one with ``--target`` -- opens N streams
    for U users from several client worker processes, measures the service's
    memory per idle stream, then sends R notifications per second for S
    seconds, each to F users, either with plain ``pg_notify`` (``--source
    notify``) or by updating real ``items`` rows so that the real triggers
    fire (``--source triggers``). Reports deliveries per second, loss,
    commit-to-receipt latency, service CPU per delivered event, and the CPU
    the clients, the emitter and the PostgreSQL backends used, so that a
    reader can tell whether the benchmark itself saturated the machine.

``bench triggers`` (:mod:`.triggers`)
    What the triggers cost the core API: single-row item UPDATEs per second
    (autocommit, one connection, one statement per transaction) on a fresh
    database, for each number of viewers of the wishlist, in short rounds that
    rotate over three configurations: no trigger, a reference trigger that only
    sends the same notification (NOTIFY's own cost), and the real triggers;
    also the CPU time the serving PostgreSQL backend spends per update (when
    it runs on this host).

The service's memory and CPU come from ``/proc/<pid>`` (``VmRSS``; ``utime``
+ ``stime``), so the benchmark's own work never counts in them.

Nothing here reads ``os.environ``: the CLI passes the environment in, and the
started service (and py-spy) get theirs from that mapping.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping

import asyncpg

from sse_service.bench.common import BenchError
from sse_service.bench.fanout import run_fanout
from sse_service.bench.options import add_arguments
from sse_service.bench.triggers import run_triggers
from sse_service.settings import Settings

__all__ = ["BenchError", "add_arguments", "main"]

EX_OK, EX_FAILED, EX_USAGE, EX_UNAVAILABLE = 0, 1, 2, 69


def main(args: argparse.Namespace, settings: Settings, env: Mapping[str, str]) -> int:
    """Entry point of ``sse-service bench``; prints the JSON result on stdout.

    ``env`` is the environment the CLI was given: the started service's
    environment is built from it.
    """
    try:
        if args.bench_mode == "fanout":
            result = asyncio.run(run_fanout(args, settings, env))
        else:
            result = asyncio.run(run_triggers(args, settings))
    except BenchError as exc:
        print(f"sse-service bench: {exc}", file=sys.stderr)
        return EX_FAILED
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(f"sse-service bench: database or service unavailable: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    print(json.dumps(result, indent=2))
    return EX_OK
