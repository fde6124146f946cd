"""``GET /metrics``: real server, real NOTIFYs, scraped and parsed like Prometheus does."""

from __future__ import annotations

import ipaddress
import json
import time
import uuid
from typing import Any

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sse_service.metrics import allowed, parse_allow
from sse_service.settings import ConfigError
from tests.harness import Running, running, settings_for, token
from tests.sseclient import SSEClient, request

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int) -> Samples:
    response = await request(port, "/metrics")
    assert response.status == 200, response.body
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.body.decode("utf-8")):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_counters_follow_real_traffic(service: Running, db: Any) -> None:
    before = await scrape(service.port)
    assert value(before, "sse_open_streams") == 0
    assert value(before, "sse_streams_opened_total") == 0
    assert value(before, "sse_listen_connected") == 1
    assert value(before, "sse_event_latency_seconds_count") == 0

    user = str(uuid.uuid4())
    client = await SSEClient.open(service.port, token=token(user))
    try:
        await service.wait_streams(1)
        await db.execute("SELECT pg_notify('sse_events', 'not json')")
        payload = {"event": "items:updated", "users": [user], "data": {"id": "i1"},
                   "ts": time.time()}
        await db.execute("SELECT pg_notify('sse_events', $1)", json.dumps(payload))
        ev = await client.next_event()  # dispatched in order: the bad one is done by now
        assert ev.event == "items:updated"

        during = await scrape(service.port)
        assert value(during, "sse_open_streams") == 1
        assert value(during, "sse_streams_opened_total") == 1
        assert value(during, "sse_events_delivered_total") == 1
        assert value(during, "sse_events_dropped_total") == 0
        assert value(during, "sse_notifications_received_total") == 2
        assert value(during, "sse_notifications_rejected_total", reason="not_json") == 1
        assert value(during, "sse_event_latency_seconds_count") == 1
        assert (value(during, "sse_event_latency_seconds_bucket", le="+Inf") == 1)
        latency_sum = value(during, "sse_event_latency_seconds_sum")
        assert latency_sum is not None and 0 <= latency_sum < 60
        history = value(during, "sse_history_size")
        assert history is not None and history >= 1  # the epoch marker and our event
        assert value(during, "sse_inbox_backlog") == 0
    finally:
        await client.close()

    await service.wait_streams(0)
    after = await scrape(service.port)
    assert value(after, "sse_open_streams") == 0
    assert value(after, "sse_streams_closed_total", reason="disconnected") == 1


async def test_resets_and_replays_are_counted(service: Running, db: Any) -> None:
    user = str(uuid.uuid4())
    first = await SSEClient.open(service.port, token=token(user))
    stale = await SSEClient.open(service.port, token=token(user),
                                 headers={"Last-Event-ID": "no-such-id"})
    try:
        await service.wait_streams(2)
        reset = await stale.next_event()
        assert reset.event == "sync:reset"
        await first.preamble()
        resume_from = first.last_event_id
        assert resume_from is not None
        await db.execute("SELECT pg_notify('sse_events', $1)", json.dumps(
            {"event": "items:updated", "users": [user], "data": {"id": "i2"}}))
        await first.next_event()
    finally:
        await first.close()
        await stale.close()
    again = await SSEClient.open(service.port, token=token(user),
                                 headers={"Last-Event-ID": resume_from})
    try:
        assert (await again.next_event()).json == {"id": "i2"}
        samples = await scrape(service.port)
        assert value(samples, "sse_resets_total", reason="unknown_last_event_id") == 1
        assert value(samples, "sse_replays_total") == 1
        assert value(samples, "sse_replayed_events_total") == 1
    finally:
        await again.close()


async def test_each_app_has_its_own_registry(service: Running, database_dsn: str) -> None:
    client = await SSEClient.open(service.port, token=token(str(uuid.uuid4())))
    try:
        await service.wait_streams(1)
        async with running(settings_for(database_dsn)) as other:
            assert value(await scrape(other.port), "sse_open_streams") == 0
            assert value(await scrape(service.port), "sse_open_streams") == 1
    finally:
        await client.close()
    exported = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "sse_" not in exported  # nothing registered on the global default registry


async def test_refused_to_addresses_not_allowed(database_dsn: str) -> None:
    async with running(settings_for(database_dsn, SSE_METRICS_ALLOW="10.9.9.9")) as svc:
        response = await request(svc.port, "/metrics")
        assert response.status == 403
        assert response.headers["content-type"].startswith("application/json")
        assert response.json["error"] == "forbidden"
        assert b"sse_" not in response.body
        # Forwarding headers are not trusted: only the TCP peer counts.
        spoofed = await request(svc.port, "/metrics", headers={"X-Forwarded-For": "10.9.9.9",
                                                              "X-Real-IP": "10.9.9.9"})
        assert spoofed.status == 403


async def test_allowed_by_network(database_dsn: str) -> None:
    env = {"SSE_METRICS_ALLOW": "10.0.0.0/8, 127.0.0.0/8"}
    async with running(settings_for(database_dsn, **env)) as svc:
        assert value(await scrape(svc.port), "sse_listen_connected") == 1


async def test_absent_when_disabled(database_dsn: str) -> None:
    async with running(settings_for(database_dsn, SSE_METRICS_ENABLED="false")) as svc:
        response = await request(svc.port, "/metrics")
        assert response.status == 404
        assert (await request(svc.port, "/healthz")).status == 200


def test_allow_list_matching() -> None:
    nets = parse_allow(("127.0.0.1", "::1", "192.168.0.0/16"))
    assert allowed("127.0.0.1", nets)
    assert allowed("::ffff:127.0.0.1", nets)  # IPv4 peer on a dual-stack socket
    assert allowed("::1", nets)
    assert allowed("192.168.7.9", nets)
    assert not allowed("127.0.0.2", nets)
    assert not allowed("10.0.0.1", nets)
    assert not allowed(None, nets)
    assert not allowed("", nets)
    assert not allowed("not-an-address", nets)
    assert not allowed("127.0.0.1", ())
    assert parse_allow(("10.1.2.3/8",)) == (ipaddress.ip_network("10.0.0.0/8"),)


def test_bad_allow_entry_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        parse_allow(("127.0.0.1", "localhost"))
    assert info.value.key == "SSE_METRICS_ALLOW"
