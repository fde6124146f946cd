"""Configuration: one frozen object, built from an environment mapping.

Nothing else in the service reads ``os.environ``: the entry point passes the
process environment to :meth:`Settings.from_env` (serving) or
:meth:`DatabaseSettings.from_env` (the commands that only talk to the
database), tests pass a plain dict. Every problem is reported as a
:class:`ConfigError` naming the variable.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

import jwt

PREFIX = "SSE_"
_CHANNEL_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SYMMETRIC = {"HS256", "HS384", "HS512"}
_ASYMMETRIC = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
               "ES256", "ES384", "ES512", "EdDSA"}

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration variable is missing or invalid; ``key`` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass(frozen=True, slots=True)
class Settings:
    """Every tunable of the service. See the README's configuration table."""

    database_url: str = field(repr=False)  # it may carry a password
    jwt_key: str = field(repr=False)
    channel: str = "sse_events"
    host: str = "127.0.0.1"
    port: int = 8090
    unix_socket: str | None = None
    unix_socket_mode: int = 0o660
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_user_claim: str = "sub"
    jwt_leeway: float = 0.0
    token_cookie: str = "access_token"  # noqa: S105 (a cookie name, not a secret)
    keepalive_interval: float = 30.0
    retry_ms: int = 3000
    shutdown_retry_ms: int = 1000
    evicted_retry_ms: int = 3_600_000
    max_streams: int = 20_000
    max_streams_per_user: int = 10
    stream_buffer_bytes: int = 256 * 1024
    replay_per_user: int = 256
    replay_window: int = 10_000
    replay_max_age: float = 300.0
    inbox_size: int = 10_000
    listen_probe_interval: float = 2.0
    listen_probe_timeout: float = 2.0
    listen_connect_timeout: float = 5.0
    listen_backoff_max: float = 30.0
    shutdown_timeout: float = 5.0
    send_timeout: float = 60.0
    backlog: int = 2048
    header_timeout: float = 10.0
    keepalive_timeout: float = 15.0
    metrics_enabled: bool = True
    metrics_allow: tuple[str, ...] = ("127.0.0.1", "::1")
    log_level: str = "INFO"
    # Whose notifications count (senders.py): () = any role; names and/or "@writers".
    notify_roles: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build and validate settings from ``SSE_*`` variables in ``env``."""
        r = _Reader(env)
        database = DatabaseSettings.from_env(env)
        default_algorithms: tuple[str, ...] = ("HS256",)
        algorithms = r.get("JWT_ALGORITHMS", _algorithms, default_algorithms)
        settings = cls(
            database_url=database.database_url,
            jwt_key=r.required("JWT_KEY", str),
            channel=database.channel,
            host=r.get("HOST", str, "127.0.0.1"),
            port=r.get("PORT", _int_range(0, 65535), 8090),
            unix_socket=r.get("UNIX_SOCKET", _socket_path, None),
            unix_socket_mode=r.get("UNIX_SOCKET_MODE", _file_mode, 0o660),
            jwt_algorithms=algorithms,
            jwt_audience=r.get("JWT_AUDIENCE", str, None),
            jwt_issuer=r.get("JWT_ISSUER", str, None),
            jwt_user_claim=r.get("JWT_USER_CLAIM", _nonempty, "sub"),
            jwt_leeway=r.get("JWT_LEEWAY", _float_range(0, 3600), 0.0),
            token_cookie=r.get("TOKEN_COOKIE", _nonempty, "access_token"),
            keepalive_interval=r.get("KEEPALIVE_INTERVAL", _float_range(0.05, 3600), 30.0),
            retry_ms=r.get("RETRY_MS", _int_range(0, 3_600_000), 3000),
            shutdown_retry_ms=r.get("SHUTDOWN_RETRY_MS", _int_range(0, 3_600_000), 1000),
            evicted_retry_ms=r.get("EVICTED_RETRY_MS", _int_range(0, 86_400_000), 3_600_000),
            max_streams=r.get("MAX_STREAMS", _int_range(1, 10_000_000), 20_000),
            max_streams_per_user=r.get("MAX_STREAMS_PER_USER", _int_range(1, 10_000), 10),
            stream_buffer_bytes=r.get("STREAM_BUFFER_BYTES", _int_range(1024, 1 << 30), 256 * 1024),
            replay_per_user=r.get("REPLAY_PER_USER", _int_range(1, 1_000_000), 256),
            replay_window=r.get("REPLAY_WINDOW", _int_range(1, 10_000_000), 10_000),
            replay_max_age=r.get("REPLAY_MAX_AGE", _float_range(0, 86_400), 300.0),
            inbox_size=r.get("INBOX_SIZE", _int_range(1, 10_000_000), 10_000),
            listen_probe_interval=r.get("LISTEN_PROBE_INTERVAL", _float_range(0.05, 300), 2.0),
            listen_probe_timeout=r.get("LISTEN_PROBE_TIMEOUT", _float_range(0.05, 300), 2.0),
            listen_connect_timeout=database.listen_connect_timeout,
            listen_backoff_max=r.get("LISTEN_BACKOFF_MAX", _float_range(0.1, 3600), 30.0),
            shutdown_timeout=r.get("SHUTDOWN_TIMEOUT", _float_range(0, 600), 5.0),
            send_timeout=r.get("SEND_TIMEOUT", _float_range(1, 3600), 60.0),
            backlog=r.get("BACKLOG", _int_range(1, 1_000_000), 2048),
            header_timeout=r.get("HEADER_TIMEOUT", _float_range(0.1, 3600), 10.0),
            keepalive_timeout=r.get("KEEPALIVE_TIMEOUT", _float_range(0.1, 3600), 15.0),
            notify_roles=r.get("NOTIFY_ROLES", _csv, ()),
            metrics_enabled=r.get("METRICS_ENABLED", _bool, True),
            metrics_allow=r.get("METRICS_ALLOW", _networks, ("127.0.0.1", "::1")),
            log_level=database.log_level,
        )
        if set(algorithms) & _ASYMMETRIC and not jwt.algorithms.has_crypto:
            raise ConfigError(
                PREFIX + "JWT_ALGORITHMS",
                "asymmetric algorithms need the 'cryptography' package "
                "(pip install 'pyjwt[crypto]')",
            )
        if set(algorithms) & _SYMMETRIC and len(settings.jwt_key.encode()) < 32:
            raise ConfigError(PREFIX + "JWT_KEY", "an HMAC secret must be at least 32 bytes long")
        return settings


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """What the commands that only talk to the database need (``install-sql``,
    ``uninstall-sql``, ``send``): they must work without the service's secret.

    The same variables, parsed the same way, as the fields of :class:`Settings`
    of the same names.
    """

    database_url: str = field(repr=False)  # it may carry a password
    channel: str = "sse_events"
    listen_connect_timeout: float = 5.0
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DatabaseSettings:
        """Build and validate these settings from ``SSE_*`` variables in ``env``;
        any other variable, even an invalid one, is left alone."""
        r = _Reader(env)
        return cls(
            database_url=r.required("DATABASE_URL", _dsn),
            channel=r.get("CHANNEL", _channel, "sse_events"),
            listen_connect_timeout=r.get("LISTEN_CONNECT_TIMEOUT", _float_range(0.1, 300), 5.0),
            log_level=r.get("LOG_LEVEL", _log_level, "INFO"),
        )


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def required(self, name: str, parse: Callable[[str], T]) -> T:
        key = PREFIX + name
        raw = self._env.get(key, "").strip()
        if not raw:
            raise ConfigError(key, "is required but not set")
        return self._parse(key, raw, parse)

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        key = PREFIX + name
        raw = self._env.get(key, "").strip()
        if not raw:
            return default
        return self._parse(key, raw, parse)

    @staticmethod
    def _parse(key: str, raw: str, parse: Callable[[str], T]) -> T:
        try:
            return parse(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(key, str(exc)) from None


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return value
    return parse


def _float_range(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected a number of seconds, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return value
    return parse


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _networks(raw: str) -> tuple[str, ...]:
    entries = _csv(raw)
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"expected IP addresses or networks, got {entry!r}") from None
    return entries


def _socket_path(raw: str) -> str:
    if not raw.startswith("/"):
        raise ValueError(f"expected an absolute path, got {raw!r}")
    if len(raw.encode()) > 107:  # sun_path holds 108 bytes with the terminating NUL
        raise ValueError("a Unix socket path must be at most 107 bytes long")
    return raw


def _file_mode(raw: str) -> int:
    if not re.fullmatch(r"0?[0-7]{3}", raw):
        raise ValueError(f"expected an octal file mode such as 0660, got {raw!r}")
    return int(raw, 8)


def _nonempty(raw: str) -> str:
    if not raw:
        raise ValueError("must not be empty")
    return raw


def _dsn(raw: str) -> str:
    if not raw.startswith(("postgres://", "postgresql://")):
        raise ValueError("expected a postgresql:// URL")
    try:
        port = urlsplit(raw).port  # raises on a port that is not a number
    except ValueError:
        raise ValueError("the URL's port is not a number") from None
    if port == 0:
        raise ValueError("the URL's port must not be 0")
    return raw


def _channel(raw: str) -> str:
    if not _CHANNEL_RE.match(raw):
        raise ValueError("expected a lower-case identifier: a-z, 0-9, _ (at most 63)")
    return raw


def _algorithms(raw: str) -> tuple[str, ...]:
    algorithms = _csv(raw)
    known = _SYMMETRIC | _ASYMMETRIC
    for alg in algorithms:
        if alg not in known:
            raise ValueError(f"unsupported algorithm {alg!r}; use some of {sorted(known)}")
    if not algorithms:
        raise ValueError("name at least one algorithm")
    if set(algorithms) & _SYMMETRIC and set(algorithms) & _ASYMMETRIC:
        raise ValueError("do not mix HMAC and public-key algorithms: one key serves them all")
    return algorithms


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return level
