"""HTTP/1.0 clients that ask for keep-alive must still see every stream end.

An HTTP/1.0 response has no chunked framing: without a length, only the
closed connection tells the client that the body is over. A stream that the
service ends (token expired, evicted, shutdown) must therefore close the
connection, even when the request said ``Connection: keep-alive``.
"""

from __future__ import annotations

import uuid

from tests.harness import running, settings_for, token
from tests.sseclient import SSEClient

KEEP_ALIVE = {"Connection": "keep-alive"}


async def test_expired_token_ends_the_connection(database_dsn: str) -> None:
    async with running(settings_for(database_dsn)) as svc:
        client = await SSEClient.open(svc.port, token=token(str(uuid.uuid4()), ttl=2),
                                      version="1.0", headers=KEEP_ALIVE)
        try:
            assert client.status == 200
            assert not client.chunked
            assert client.headers.get("connection", "").lower() != "keep-alive"
            events = await client.wait_eof(timeout=15)
            assert [e.event for e in events if e.event != "sync:ping"] == ["auth:expired"]
        finally:
            await client.close()


async def test_evicted_stream_ends_the_connection(database_dsn: str) -> None:
    user = str(uuid.uuid4())
    async with running(settings_for(database_dsn, SSE_MAX_STREAMS_PER_USER="1")) as svc:
        first = await SSEClient.open(svc.port, token=token(user), version="1.0",
                                     headers=KEEP_ALIVE)
        await svc.wait_streams(1)
        second = await SSEClient.open(svc.port, token=token(user), version="1.0",
                                      headers=KEEP_ALIVE)
        try:
            events = await first.wait_eof(timeout=10)
            assert [e.event for e in events if e.event != "sync:ping"] == ["sync:closed"]
        finally:
            await first.close()
            await second.close()


async def test_shutdown_ends_the_connection(database_dsn: str) -> None:
    async with running(settings_for(database_dsn)) as svc:
        client = await SSEClient.open(svc.port, token=token(str(uuid.uuid4())),
                                      version="1.0", headers=KEEP_ALIVE)
        await svc.wait_streams(1)
        try:
            await svc.stop()
            await client.wait_eof(timeout=10)
            assert client.retry is not None and client.retry < 3000  # the shutdown's block
        finally:
            await client.close()


async def test_http11_streams_stay_chunked_and_keep_alive(database_dsn: str) -> None:
    """The fix touches HTTP/1.0 only: an HTTP/1.1 stream still ends with its last chunk."""
    async with running(settings_for(database_dsn)) as svc:
        client = await SSEClient.open(svc.port, token=token(str(uuid.uuid4()), ttl=2))
        try:
            assert client.chunked
            assert client.headers.get("connection", "keep-alive").lower() == "keep-alive"
            events = await client.wait_eof(timeout=15)
            assert [e.event for e in events if e.event != "sync:ping"] == ["auth:expired"]
        finally:
            await client.close()
