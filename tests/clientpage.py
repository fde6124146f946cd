"""A test page that runs ``realtime.js`` and records everything it reports.

The page imports the module from the service (as the PWA does) and exposes
``window.startClient(options)``; every typed event, resync and state change
lands in ``window.rtLog`` as ``{kind, ...}``. Tokens come from the test
service's ``/test/token?user=`` (see :mod:`tests.browser`), so the service side
counts every ``getToken()`` call.
"""

from __future__ import annotations

from typing import Any

from tests.browser import CLIENT_URL, TOKEN_PATH

PAGE_PATH = "/test/client.html"
EVENT_TYPES = ("items:updated", "items:resolved", "wishlists:updated", "marks:updated")

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>realtime client test</title></head><body>
<script type="module">
import { createRealtimeClient } from "CLIENT_URL";
window.rtLog = [];
const log = (entry) => window.rtLog.push({ at: Date.now(), ...entry });
window.startClient = (user, options = {}) => {
  const getToken = async () => {
    const res = await fetch("TOKEN_PATH?user=" + encodeURIComponent(user));
    if (!res.ok) throw new Error("token endpoint: " + res.status);
    return res.text();
  };
  const client = createRealtimeClient({ url: "/api/v1/events/stream", getToken,
                                        channelKey: user, ...options });
  for (const type of EVENT_TYPES) {
    client.on(type, (data, id) => log({ kind: "event", type, data, id }));
  }
  client.onResync((reason) => log({ kind: "resync", reason }));
  client.onState((state) => log({ kind: "state", state, leader: client.isLeader }));
  window.client = client;
  return true;
};
window.ready = true;
</script></body></html>
"""


def page_html() -> str:
    import json

    return (PAGE.replace("CLIENT_URL", CLIENT_URL).replace("TOKEN_PATH", TOKEN_PATH)
                .replace("EVENT_TYPES", json.dumps(list(EVENT_TYPES))))


Entry = dict[str, Any]


def events(log: list[Entry]) -> list[Entry]:
    return [e for e in log if e["kind"] == "event"]


def item_ids(log: list[Entry]) -> list[str]:
    """The ids of items:updated events, in arrival order."""
    return [e["data"]["id"] for e in events(log) if e["type"] == "items:updated"]


def resyncs(log: list[Entry]) -> list[str]:
    return [e["reason"] for e in log if e["kind"] == "resync"]


def states(log: list[Entry]) -> list[str]:
    return [e["state"] for e in log if e["kind"] == "state"]
