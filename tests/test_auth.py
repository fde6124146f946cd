"""Authentication of the stream and status endpoints, and tokens kept out of logs."""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid

import jwt
import pytest

from tests.harness import JWT_KEY, Running, token
from tests.sseclient import SSEClient, request

STREAM = "/api/v1/events/stream"


def b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def unsigned(user: str) -> str:
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'sub': user, 'exp': time.time() + 60})}."


BAD_TOKENS = {
    "expired": token("u", ttl=-10),
    "wrong key": token("u", key="another-secret-another-secret-another-secret"),
    "alg none": unsigned("u"),
    "other algorithm": jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, JWT_KEY * 2,
                                  algorithm="HS512"),
    "malformed": "not.a.jwt",
    "garbage": "%%%",
    "no exp": jwt.encode({"sub": "u"}, JWT_KEY, algorithm="HS256"),
    "no sub": jwt.encode({"exp": int(time.time()) + 60}, JWT_KEY, algorithm="HS256"),
    "numeric sub": jwt.encode({"sub": 42, "exp": int(time.time()) + 60}, JWT_KEY,
                              algorithm="HS256"),
}


@pytest.mark.parametrize("name", list(BAD_TOKENS))
async def test_bad_tokens_get_401_json(service: Running, name: str) -> None:
    resp = await request(service.port, STREAM, token=BAD_TOKENS[name])
    assert resp.status == 401
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json["error"] == "invalid_token"
    assert resp.headers["www-authenticate"].startswith('Bearer realm="sse-service"')
    assert BAD_TOKENS[name] not in resp.body.decode()


async def test_missing_token(service: Running) -> None:
    for path in (STREAM, "/api/v1/events/status"):
        resp = await request(service.port, path)
        assert resp.status == 401
        assert resp.json["error"] == "missing_token"
        assert resp.headers["www-authenticate"] == 'Bearer realm="sse-service"'


async def test_malformed_authorization_header(service: Running) -> None:
    resp = await request(service.port, STREAM, headers={"Authorization": "Bearer "})
    assert resp.status == 401
    resp = await request(service.port, STREAM, headers={"Authorization": "Bearer a b"})
    assert resp.status == 401
    resp = await request(service.port, STREAM, headers={"Authorization": "Basic abc"})
    assert resp.status == 401 and resp.json["error"] == "missing_token"


async def test_another_authorization_scheme_does_not_hide_the_cookie(service: Running) -> None:
    """A proxy's Basic auth in front of the service must not lock browsers out."""
    user = str(uuid.uuid4())
    c = await SSEClient.open(service.port, f"{STREAM}?token={token(user)}",
                             headers={"Authorization": "Basic dXNlcjpwYXNz"})
    try:
        assert c.status == 200
    finally:
        await c.close()


async def test_token_in_query_and_cookie(service: Running) -> None:
    user = str(uuid.uuid4())
    q = await SSEClient.open(service.port, f"{STREAM}?token={token(user)}")
    c = await SSEClient.open(service.port, headers={"Cookie": f"access_token={token(user)}"})
    try:
        assert q.status == 200 and c.status == 200
        await service.wait_streams(2)
        assert service.service.hub.streams_of(user) == 2
    finally:
        await q.close()
        await c.close()


async def test_no_token_in_any_log_line(service: Running, caplog: pytest.LogCaptureFixture
                                        ) -> None:
    caplog.set_level(logging.DEBUG)
    secret = token(str(uuid.uuid4()))
    await request(service.port, f"/api/v1/events/status?token={secret}")
    await request(service.port, f"{STREAM}?token={secret}x")  # invalid: logged as 401
    client = await SSEClient.open(service.port, f"{STREAM}?token={secret}")
    await service.wait_streams(1)
    await client.close()
    await service.wait_streams(0)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "/api/v1/events/status" in text  # the access log did log the request
    assert secret not in text
    assert "token=" not in text


async def test_unknown_path_and_method_are_json(service: Running) -> None:
    resp = await request(service.port, "/nope")
    assert resp.status == 404 and resp.json["error"] == "not_found"
    resp = await request(service.port, STREAM, method="POST", token=token("u"))
    assert resp.status == 405 and "GET" in resp.headers["allow"]
    assert resp.json["error"] == "method_not_allowed"
    resp = await request(service.port, STREAM, method="HEAD", token=token("u"))
    assert resp.status == 405 and resp.headers["allow"] == "GET"
    resp = await request(service.port, "/healthz", method="DELETE")
    assert resp.status == 405 and resp.headers["allow"] == "GET,HEAD"
    assert resp.json["error"] == "method_not_allowed"
    assert (await request(service.port, "/healthz", method="HEAD")).status == 200


async def test_oversized_headers_are_refused(service: Running) -> None:
    resp = await request(service.port, STREAM, headers={"Last-Event-ID": "9" * 20000})
    assert resp.status in (400, 431)


async def test_a_token_in_an_oversized_request_is_redacted_from_the_log(
        service: Running, capsys: pytest.CaptureFixture[str]) -> None:
    """aiohttp logs the first bytes of a request line or header that is too long."""
    from sse_service import logs

    logs.setup("INFO")
    try:
        secret = token(str(uuid.uuid4()))
        resp = await request(service.port, STREAM, headers={"Authorization": f"Bearer {secret}"
                                                            + "a" * 9000})
        assert resp.status == 400
        resp = await request(service.port, f"{STREAM}?token={secret}" + "a" * 9000)
        assert resp.status == 400
    finally:
        logging.getLogger().handlers.clear()
    out = capsys.readouterr().out
    assert "Error handling request" in out  # the line was logged, and masked
    assert secret[:20] not in out


def test_redact() -> None:
    from sse_service.logs import _pattern, redact

    assert redact("GET /s?token=abc.def&x=1 Bearer xyz") == "GET /s?token=***&x=1 Bearer ***"
    assert redact("b'Bearer eyJhbGciOi...'") == "b'Bearer ***'"
    assert redact("Bearer\tsecret") == "Bearer\t***"
    assert redact('Cookie: access_token="secret"; x=1') == 'Cookie: access_token="***"; x=1'
    jwt_text = token("u")
    assert redact(f"GET /s?tok%65n={jwt_text}") == "GET /s?tok%65n=***"
    assert "secret" not in redact("Cookie: jwt=secret", _pattern("jwt"))


async def test_a_malformed_cookie_header_with_a_token_is_not_logged(
        database_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    """aiohttp quotes a bad header line in its error log; only the class remains."""
    from sse_service import logs
    from tests.harness import running, settings_for

    logs.setup("INFO", "jwt")
    try:
        async with running(settings_for(database_dsn, SSE_TOKEN_COOKIE="jwt")) as svc:
            resp = await request(svc.port, STREAM,
                                 headers={"Cookie": "jwt=opaque-secret-value\x01"})
            assert resp.status == 400
    finally:
        logging.getLogger().handlers.clear()
    out = capsys.readouterr().out
    assert "bad request (BadHttpMessage)" in out
    assert "opaque-secret-value" not in out


async def test_an_explicit_token_wins_over_a_stale_cookie(service: Running) -> None:
    """The recovery after auth:expired: reopen with ?token=<new> while the old cookie stays."""
    user = str(uuid.uuid4())
    stale = f"access_token={token(user, ttl=-10)}"
    q = await SSEClient.open(service.port, f"{STREAM}?token={token(user)}",
                             headers={"Cookie": stale})
    h = await SSEClient.open(service.port, token=token(user), headers={"Cookie": stale})
    try:
        assert q.status == 200 and h.status == 200
    finally:
        await q.close()
        await h.close()
    # The first token found is the one checked: no fallback to the ambient cookie.
    resp = await request(service.port, f"{STREAM}?token={token(user, ttl=-10)}",
                         headers={"Cookie": f"access_token={token(user)}"})
    assert resp.status == 401 and resp.json["message"] == "token expired"
    resp = await request(service.port, "/api/v1/events/status",
                         headers={"Cookie": f"access_token={token(user)}"})
    assert resp.status == 200  # the cookie alone still works


async def test_a_token_with_an_audience_needs_SSE_JWT_AUDIENCE(
        service: Running, database_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    """RFC 7519 4.1.3: with no audience configured, a token naming one is refused."""
    from tests.harness import running, settings_for

    user = str(uuid.uuid4())
    with caplog.at_level(logging.WARNING, "sse_service.auth"):
        resp = await request(service.port, "/api/v1/events/status",
                             token=token(user, aud="wishwithme"))
    assert resp.status == 401 and resp.json["error"] == "invalid_token"
    assert "audience" in str(resp.json["message"])
    assert any("SSE_JWT_AUDIENCE" in r.getMessage() for r in caplog.records)
    async with running(settings_for(database_dsn, SSE_JWT_AUDIENCE="wishwithme")) as svc:
        resp = await request(svc.port, "/api/v1/events/status",
                             token=token(user, aud="wishwithme"))
        assert resp.status == 200
        for wrong in (token(user, aud="another"), token(user)):
            resp = await request(svc.port, "/api/v1/events/status", token=wrong)
            assert resp.status == 401
