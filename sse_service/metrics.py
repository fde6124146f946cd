"""``GET /metrics``: the service's counters in the Prometheus text format.

The hot path only increments plain integers on :class:`~sse_service.stats.Stats`;
nothing there touches a prometheus object. At scrape time a custom collector,
registered on a registry of the application's own (never the library's global
default registry), reads those integers plus a few live values (open streams,
inbox backlog, LISTEN state, history size) and turns them into metric families.

Access: the route exists only with ``SSE_METRICS_ENABLED`` (else 404), and it
answers only clients whose address is in ``SSE_METRICS_ALLOW`` (else 403). The
address is the TCP peer's (``request.remote``); forwarding headers are ignored,
so behind nginx the peer is nginx itself and nginx must refuse ``/metrics`` to
the public.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from sse_service.errors import Forbidden
from sse_service.service import SERVICE, Service
from sse_service.settings import PREFIX, ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
_ALLOWED: web.AppKey[tuple[Network, ...]] = web.AppKey("metrics_allowed")


class ServiceCollector:
    """Reads one :class:`Service`'s state each time the registry is collected."""

    def __init__(self, service: Service) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        service = self._service
        stats = service.stats

        yield _gauge("sse_open_streams", "Streams currently open on this instance.",
                     service.hub.count)
        yield _counter("sse_streams_opened", "Streams opened since start.",
                       stats.streams_opened)
        yield _by_reason("sse_streams_closed", "Streams closed since start, by reason.",
                         stats.streams_closed)
        yield _counter("sse_notifications_received",
                       "NOTIFY payloads taken from the inbox, valid or not.",
                       stats.notifications_received)
        yield _by_reason("sse_notifications_rejected",
                         "NOTIFY payloads refused (never sent to a stream), by reason.",
                         stats.notifications_rejected)
        yield _counter("sse_events_delivered", "Event writes to streams (one per stream).",
                       stats.events_delivered)
        yield _counter("sse_events_dropped",
                       "Event writes not done: the stream was gone, closing or too slow.",
                       stats.events_dropped)
        yield _counter("sse_replays", "Reconnects resumed exactly from Last-Event-ID.",
                       stats.replays)
        yield _counter("sse_replayed_events", "Events written by those resumes.",
                       stats.replayed_events)
        yield _by_reason("sse_resets", "sync:reset events sent to streams, by reason.",
                         stats.resets)
        yield _counter("sse_listen_reconnects",
                       "Times the LISTEN connection was re-established after a loss.",
                       stats.listen_reconnects)
        yield _gauge("sse_listen_connected", "1 while the LISTEN connection is up, else 0.",
                     1 if service.listener.state.connected else 0)
        yield _gauge("sse_inbox_backlog", "Notifications received but not yet dispatched.",
                     service.dispatcher.backlog)
        yield _gauge("sse_history_size", "Notifications held for Last-Event-ID resumes.",
                     len(service.history))

        latency = stats.latency
        yield HistogramMetricFamily(
            "sse_event_latency_seconds",
            "Seconds from a notification's \"ts\" (set by its sender) until it was "
            "written to its streams; only notifications that carry \"ts\".",
            buckets=latency.cumulative(), sum_value=latency.sum,
        )


def _counter(name: str, doc: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _by_reason(name: str, doc: str, counts: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["reason"])
    for reason, value in sorted(counts.items()):
        family.add_metric([reason], value)
    return family


def parse_allow(entries: Iterable[str]) -> tuple[Network, ...]:
    """``SSE_METRICS_ALLOW`` entries as networks: an address, or a CIDR block."""
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ConfigError(PREFIX + "METRICS_ALLOW",
                              f"expected IP addresses or networks, got {entry!r}") from None
    return tuple(networks)


def allowed(remote: str | None, networks: Iterable[Network]) -> bool:
    """Whether the peer address ``remote`` falls in one of ``networks``."""
    if not remote:
        return False
    try:
        addr = ipaddress.ip_address(remote.partition("%")[0])  # drop an IPv6 zone
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # a dual-stack socket reports IPv4 peers this way
    return any(addr in net for net in networks)


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    networks = app[_ALLOWED]
    if not allowed(request.remote, networks):
        raise Forbidden("metrics are not available to this address")
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encoder(app[REGISTRY]), headers={"Content-Type": content_type})


def setup(app: web.Application) -> None:
    """Prepare ``GET /metrics`` for the app's :class:`Service`; routes.py adds the route."""
    service = app[SERVICE]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(service))
    app[REGISTRY] = registry
    app[_ALLOWED] = parse_allow(service.settings.metrics_allow)
