"""The service's parts, wired together once per application.

One :class:`Service` object lives under the ``SERVICE`` app key; there are
no module-level singletons, so tests can run several services side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from sse_service.auth import TokenVerifier
from sse_service.dispatch import Dispatcher
from sse_service.history import History
from sse_service.hub import Hub
from sse_service.ids import IdCodec
from sse_service.listener import Listener
from sse_service.settings import Settings
from sse_service.stats import Stats


@dataclass(frozen=True, slots=True)
class Service:
    settings: Settings
    stats: Stats
    history: History
    hub: Hub
    dispatcher: Dispatcher
    listener: Listener
    verifier: TokenVerifier
    failures: list[str] = field(default_factory=list)  # background loops that died

    @classmethod
    def build(cls, settings: Settings) -> Service:
        stats = Stats()
        history = History(window=settings.replay_window, per_user=settings.replay_per_user,
                          max_age=settings.replay_max_age)
        hub = Hub(history=history, stats=stats, max_streams=settings.max_streams,
                  max_streams_per_user=settings.max_streams_per_user,
                  retry_ms=settings.retry_ms, evicted_retry_ms=settings.evicted_retry_ms)
        dispatcher = Dispatcher(hub=hub, history=history, stats=stats, size=settings.inbox_size,
                                ids=IdCodec(settings.jwt_key))
        listener = Listener(settings, dispatcher, stats)
        return cls(settings=settings, stats=stats, history=history, hub=hub,
                   dispatcher=dispatcher, listener=listener, verifier=TokenVerifier(settings))


SERVICE = web.AppKey("service", Service)
