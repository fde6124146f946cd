"""Logging: one line per event of note, on stdout, journald-friendly.

No timestamps (journald adds them) and a syslog-style ``<N>`` level prefix
that journald understands when ``SyslogLevelPrefix`` is on (the default).
The access log prints the path without its query string, so a ``?token=``
can never reach a log file.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

_SYSLOG = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4,
           logging.ERROR: 3, logging.CRITICAL: 2}


# Whatever a library logs (aiohttp logs a malformed request line or header with
# its first bytes), credentials are masked before a line leaves the process.
_SECRETS = re.compile(
    r"(?P<k>(?:token|access_token)=|Bearer\s+|Authorization:\s*\S+\s+)[^\s&'\"\\]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with bearer tokens and ``token=`` values replaced by ``***``."""
    return _SECRETS.sub(r"\g<k>***", text)


class JournalFormatter(logging.Formatter):
    """``<level>logger: message``, with credentials redacted."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_SYSLOG.get(record.levelno, 6)}>"
        return prefix + redact(super().format(record))


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class AccessLogger(AbstractAccessLogger):
    """``METHOD /path STATUS bytes seconds``, without the query string."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %s %.3f", request.method, request.path,
                         response.status, response.body_length, time)


class RateLimited:
    """Logs a kind of problem at most once per ``interval`` seconds, with a count."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            msg += " (%d more like it suppressed)"
            args = (*args, suppressed)
        self._logger.warning(msg, *args)
