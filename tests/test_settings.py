"""Configuration: defaults, validation, and errors that name the variable."""

from __future__ import annotations

import pytest

from sse_service.settings import ConfigError, DatabaseSettings, Settings

BASE = {"SSE_DATABASE_URL": "postgresql://db/x", "SSE_JWT_KEY": "k" * 32}


def test_defaults() -> None:
    s = Settings.from_env(BASE)
    assert s.channel == "sse_events"
    assert s.port == 8090 and s.host == "127.0.0.1"
    assert s.jwt_algorithms == ("HS256",) and s.jwt_user_claim == "sub"
    assert s.keepalive_interval == 30.0
    assert s.max_streams_per_user == 10
    assert "k" * 32 not in repr(s)  # the secret stays out of reprs and logs


def test_values_are_parsed() -> None:
    s = Settings.from_env({**BASE, "SSE_PORT": "9000", "SSE_JWT_ALGORITHMS": "HS256, HS512",
                           "SSE_METRICS_ENABLED": "no", "SSE_METRICS_ALLOW": "10.0.0.0/8,::1",
                           "SSE_KEEPALIVE_INTERVAL": "2.5", "SSE_JWT_AUDIENCE": "wishwithme"})
    assert s.port == 9000
    assert s.jwt_algorithms == ("HS256", "HS512")
    assert s.metrics_enabled is False
    assert s.metrics_allow == ("10.0.0.0/8", "::1")
    assert s.keepalive_interval == 2.5 and s.jwt_audience == "wishwithme"
    assert s.unix_socket is None and s.unix_socket_mode == 0o660
    s = Settings.from_env({**BASE, "SSE_UNIX_SOCKET": "/run/sse-service/sse.sock",
                           "SSE_UNIX_SOCKET_MODE": "0600"})
    assert s.unix_socket == "/run/sse-service/sse.sock" and s.unix_socket_mode == 0o600


@pytest.mark.parametrize(("env", "key"), [
    ({"SSE_JWT_KEY": "k" * 32}, "SSE_DATABASE_URL"),
    ({"SSE_DATABASE_URL": "postgresql://db/x"}, "SSE_JWT_KEY"),
    ({**BASE, "SSE_DATABASE_URL": "mysql://x"}, "SSE_DATABASE_URL"),
    ({**BASE, "SSE_DATABASE_URL": "postgresql://h:port/db"}, "SSE_DATABASE_URL"),
    ({**BASE, "SSE_JWT_KEY": "short"}, "SSE_JWT_KEY"),
    ({**BASE, "SSE_PORT": "eighty"}, "SSE_PORT"),
    ({**BASE, "SSE_PORT": "70000"}, "SSE_PORT"),
    ({**BASE, "SSE_CHANNEL": "Bad-Channel"}, "SSE_CHANNEL"),
    ({**BASE, "SSE_CHANNEL": "x" * 64}, "SSE_CHANNEL"),
    ({**BASE, "SSE_JWT_ALGORITHMS": "none"}, "SSE_JWT_ALGORITHMS"),
    ({**BASE, "SSE_JWT_ALGORITHMS": "HS256,RS256"}, "SSE_JWT_ALGORITHMS"),
    ({**BASE, "SSE_KEEPALIVE_INTERVAL": "0"}, "SSE_KEEPALIVE_INTERVAL"),
    ({**BASE, "SSE_MAX_STREAMS_PER_USER": "0"}, "SSE_MAX_STREAMS_PER_USER"),
    ({**BASE, "SSE_METRICS_ENABLED": "maybe"}, "SSE_METRICS_ENABLED"),
    ({**BASE, "SSE_METRICS_ALLOW": "localhost"}, "SSE_METRICS_ALLOW"),
    ({**BASE, "SSE_LOG_LEVEL": "LOUD"}, "SSE_LOG_LEVEL"),
    ({**BASE, "SSE_UNIX_SOCKET": "run/sse.sock"}, "SSE_UNIX_SOCKET"),
    ({**BASE, "SSE_UNIX_SOCKET": "/" + "x" * 107}, "SSE_UNIX_SOCKET"),
    ({**BASE, "SSE_UNIX_SOCKET_MODE": "660x"}, "SSE_UNIX_SOCKET_MODE"),
    ({**BASE, "SSE_UNIX_SOCKET_MODE": "0888"}, "SSE_UNIX_SOCKET_MODE"),
])
def test_errors_name_the_variable(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.key == key
    assert str(info.value).startswith(key + ":")


def test_settings_are_frozen() -> None:
    s = Settings.from_env(BASE)
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


def test_database_settings_need_no_jwt_key() -> None:
    """The database-only commands (install-sql, uninstall-sql, send) run
    without the service's secret, and ignore the serving settings entirely."""
    s = DatabaseSettings.from_env({"SSE_DATABASE_URL": "postgresql://db/x",
                                   "SSE_PORT": "not a port", "SSE_JWT_KEY": "short"})
    assert s.database_url == "postgresql://db/x"
    assert (s.channel, s.listen_connect_timeout, s.log_level) == ("sse_events", 5.0, "INFO")
    s = DatabaseSettings.from_env({"SSE_DATABASE_URL": "postgresql://db/x",
                                   "SSE_CHANNEL": "other", "SSE_LISTEN_CONNECT_TIMEOUT": "1.5",
                                   "SSE_LOG_LEVEL": "debug"})
    assert (s.channel, s.listen_connect_timeout, s.log_level) == ("other", 1.5, "DEBUG")


@pytest.mark.parametrize(("env", "key"), [
    ({}, "SSE_DATABASE_URL"),
    ({"SSE_DATABASE_URL": "mysql://x"}, "SSE_DATABASE_URL"),
    ({"SSE_DATABASE_URL": "postgresql://db/x", "SSE_CHANNEL": "Bad-Channel"}, "SSE_CHANNEL"),
    ({"SSE_DATABASE_URL": "postgresql://db/x", "SSE_LISTEN_CONNECT_TIMEOUT": "0"},
     "SSE_LISTEN_CONNECT_TIMEOUT"),
    ({"SSE_DATABASE_URL": "postgresql://db/x", "SSE_LOG_LEVEL": "LOUD"}, "SSE_LOG_LEVEL"),
])
def test_database_settings_errors_name_the_variable(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        DatabaseSettings.from_env(env)
    assert info.value.key == key


def test_database_settings_agree_with_settings() -> None:
    """Both read the shared variables the same way."""
    env = {**BASE, "SSE_CHANNEL": "other", "SSE_LISTEN_CONNECT_TIMEOUT": "2",
           "SSE_LOG_LEVEL": "warning"}
    s, d = Settings.from_env(env), DatabaseSettings.from_env(env)
    assert (s.database_url, s.channel, s.listen_connect_timeout, s.log_level) == (
        d.database_url, d.channel, d.listen_connect_timeout, d.log_level)


def test_the_database_url_stays_out_of_reprs() -> None:
    env = {**BASE, "SSE_DATABASE_URL": "postgresql://u:hunter2@db/x"}
    assert "hunter2" not in repr(Settings.from_env(env))
    assert "hunter2" not in repr(DatabaseSettings.from_env(env))
