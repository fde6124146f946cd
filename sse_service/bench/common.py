"""What every part of the benchmark shares: its error, its progress lines, its types.

Progress goes to stderr, so that stdout carries nothing but the one JSON result.
"""

from __future__ import annotations

import sys
import time
from typing import Any

Conn = Any  # asyncpg.Connection (asyncpg ships no type hints)


class BenchError(RuntimeError):
    """The benchmark cannot run (setup failed); the message says why."""


def progress(message: str) -> None:
    """One timestamped progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
