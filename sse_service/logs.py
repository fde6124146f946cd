"""Logging: one line per event of note, on stdout, journald-friendly.

No timestamps (journald adds them) and a syslog-style ``<N>`` level prefix
that journald understands when ``SyslogLevelPrefix`` is on (the default).
The access log prints the path without its query string, so a ``?token=``
can never reach a log file. Every line is one line: control characters, in
whatever a client sent or a library quoted, are escaped (``\\n``, ``\\x01``),
so that no client can start a line of its own (journald reads each line's
``<N>`` as its priority).
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
# its first bytes), credentials are masked before a line leaves the process:
# anything shaped like a JWT wherever it stands, and the value after a
# "token=", a cookie-like "name=" of ours, "Bearer" or "Authorization:".
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*")
_AFTER = r"(?P<k>(?:{names})\s*=\s*\"?|Bearer\s+|Authorization:\s*\S+\s+)[^\s&;'\"\\]+"


def _pattern(cookie: str) -> re.Pattern[str]:
    names = "|".join(re.escape(n) for n in dict.fromkeys(("token", "access_token", cookie)))
    return re.compile(_AFTER.format(names=names), re.IGNORECASE)


_SECRETS = _pattern("access_token")


# C0 and C1 controls and the Unicode line separators: a line break to someone.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match[0]
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with every control character (and U+2028/9) written as an escape."""
    return _CONTROL.sub(_escaped, text)


def escape_client(text: str) -> str:
    """A value a client chose, for a log line: backslashes doubled, controls escaped,
    so that what the log shows reads back as exactly what was sent."""
    return escape(text.replace("\\", "\\\\"))


def redact(text: str, secrets: re.Pattern[str] = _SECRETS) -> str:
    """``text`` with bearer tokens, JWTs and ``token=`` values replaced by ``***``."""
    return secrets.sub(r"\g<k>***", _JWT.sub("***", text))


class JournalFormatter(logging.Formatter):
    """``<level>logger: message``, with credentials redacted.

    aiohttp's report of a malformed request quotes the offending bytes; it is
    cut to its first line (the exception's class and position), since the
    bytes may hold a credential that no pattern recognises.
    """

    def __init__(self, fmt: str, cookie: str = "access_token") -> None:
        super().__init__(fmt)
        self._secrets = _pattern(cookie)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_SYSLOG.get(record.levelno, 6)}>"
        if record.name.startswith("aiohttp.server") and record.exc_info:
            exc = record.exc_info[1]
            record = logging.makeLogRecord(record.__dict__)
            record.exc_info = record.exc_text = None
            record.msg = f"{record.getMessage()}: bad request ({type(exc).__name__})"
            record.args = ()
        # One record, one line: a traceback too (its line breaks become "\\n").
        return prefix + escape(redact(super().format(record), self._secrets))


def setup(level: str, cookie: str = "access_token") -> None:
    """Log to stdout for journald; ``cookie`` is the token cookie's name, to redact."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JournalFormatter("%(name)s: %(message)s", cookie))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class AccessLogger(AbstractAccessLogger):
    """``METHOD /path STATUS bytes seconds``, without the query string.

    The method and the (percent-decoded) path are the client's: a ``%0A`` in the
    path is a line break once decoded, so both are escaped here (and the
    formatter escapes whatever else reaches a line).
    """

    __slots__ = ()  # aiohttp makes one per connection: no __dict__ for each

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %s %.3f", escape_client(request.method),
                         escape_client(request.path),
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
