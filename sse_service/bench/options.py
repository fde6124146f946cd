"""The ``bench`` subcommand's command line: its modes and their options."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from sse_service.bench.common import BenchError
from sse_service.notification import MAX_USERS
from sse_service.scratchdb import CORE_SCHEMA as DEFAULT_SCHEMA


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bench`` subcommand's own subcommands and options."""
    modes = parser.add_subparsers(dest="bench_mode", metavar="MODE", required=True)

    fan = modes.add_parser(
        "fanout", help="streams held, memory per stream, fan-out throughput and latency",
        description="Open N streams for U users, then send R notifications/s for S seconds, "
                    "each to F users; report one JSON object on stdout.")
    fan.add_argument("--streams", type=_positive_int, default=1000, help="streams to open (N)")
    fan.add_argument("--users", type=_positive_int, default=None,
                     help="distinct users (U <= N; default N); stream s belongs to user s %% U")
    fan.add_argument("--rate", type=_positive_float, default=200.0,
                     help="notifications (or trigger-firing transactions) per second")
    fan.add_argument("--fanout", type=_recipients, default=100,
                     help="recipients (users) of each notification")
    fan.add_argument("--duration", type=_positive_float, default=10.0,
                     help="seconds of emission")
    fan.add_argument("--source", choices=("notify", "triggers"), default="notify",
                     help="plain pg_notify, or UPDATEs of real items rows through the triggers")
    fan.add_argument("--target", default=None, metavar="URL",
                     help="a running service (http://host:port) instead of starting one; it "
                          "must listen on SSE_DATABASE_URL with the same SSE_JWT_KEY")
    fan.add_argument("--unix", nargs="?", const="", default=None, metavar="PATH",
                     help="clients connect over a Unix socket (SSE_UNIX_SOCKET), as nginx on "
                          "the same host can; a started service gets a temporary one, with "
                          "--target give the running service's PATH")
    fan.add_argument("--nginx", action="store_true",
                     help="as deployed: clients connect to a private nginx running the shipped "
                          "site (one worker) in front of the started service (its Unix socket "
                          "with --unix); nginx's memory and CPU are measured too")
    fan.add_argument("--pid", type=_positive_int, default=None,
                     help="with --target: the service's process id, to measure memory and CPU")
    fan.add_argument("--clients", type=_positive_int, default=None,
                     help="client worker processes (default: the number of CPUs, at most 4)")
    fan.add_argument("--tick", type=_positive_float, default=5.0,
                     help="emission tick in ms: notifications due are sent together, "
                          "in one transaction (notify source)")
    fan.add_argument("--connections", type=_positive_int, default=4,
                     help="database connections writing rows (triggers source)")
    fan.add_argument("--warmup", type=float, default=3.0, metavar="SECONDS",
                     help="the same rate and fan-out (as plain pg_notify), neither measured nor "
                          "counted, before the measurement (0: none)")
    fan.add_argument("--drain", type=_positive_float, default=10.0,
                     help="at most this many seconds to wait for late deliveries")
    fan.add_argument("--seed", type=int, default=1, help="random seed for recipient choice")
    fan.add_argument("--service-env", action="append", default=[], metavar="KEY=VALUE",
                     help="extra environment for the started service (repeatable)")
    fan.add_argument("--profile", default=None, metavar="PATH",
                     help="record the service with py-spy (raw format) during emission")
    fan.add_argument("--samples", default=None, metavar="PATH",
                     help="write every delivery (worker,key,send,commit,receipt) as CSV")
    _common(fan)

    trig = modes.add_parser(
        "triggers", help="what the triggers cost the core API's single-row updates",
        description="Single-row item UPDATEs per second (autocommit, one connection) on a "
                    "fresh database, per viewer count: no trigger, a reference trigger that "
                    "only sends the same notification (NOTIFY's own cost), the triggers.")
    trig.add_argument("--viewers", type=_int_list, default=[0, 100],
                      help="comma-separated viewer counts of the wishlist (default 0,100)")
    trig.add_argument("--updates", type=_positive_int, default=5000,
                      help="timed updates per run")
    trig.add_argument("--repeat", type=_positive_int, default=3,
                      help="runs; each is split into sets of short rounds, one round per "
                           "configuration (none, reference, triggers); medians of the sets")
    trig.add_argument("--items", type=_positive_int, default=100,
                      help="items of the wishlist that the updates rotate over")
    trig.add_argument("--no-listen", dest="listen", action="store_false",
                      help="do not LISTEN while the triggers notify (the service would)")
    _common(trig)


def check_target_options(args: argparse.Namespace) -> None:
    """``bench fanout``'s options that only go with (or without) ``--target``."""
    if args.pid and not args.target:
        raise BenchError("--pid only goes with --target")
    if args.unix == "" and args.target:
        raise BenchError("--unix with --target needs the service's socket PATH")
    if args.nginx and args.target:
        raise BenchError("--nginx fronts a started service, not a --target")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--schema", type=Path, default=DEFAULT_SCHEMA,
                        help=f"core API schema to load into the fresh database "
                             f"(default {DEFAULT_SCHEMA})")
    parser.add_argument("--admin-dsn", default=None,
                        help="where to CREATE/DROP the fresh database (default "
                             "SSE_DATABASE_URL; needs CREATEDB)")


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _recipients(raw: str) -> int:
    value = _positive_int(raw)
    if value > MAX_USERS:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_USERS}: the service refuses notifications naming more users")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {raw}")
    return value


def _int_list(raw: str) -> list[int]:
    try:
        values = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {raw!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError("expected non-negative numbers")
    return values
