"""A test page that runs ``realtime.js`` and records everything it reports.

The page imports the module from the service (as the PWA does) and exposes
``window.startClient(options)``; every typed event, resync and state change
lands in ``window.rtLog`` as ``{kind, ...}``. Tokens come from the test
service's ``/test/token?user=`` (see :mod:`tests.browser`), so the service side
counts every ``getToken()`` call.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tests.browser import CLIENT_URL, TOKEN_PATH, PageService, eventually

if TYPE_CHECKING:
    from playwright.async_api import Page

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
  // cookieMode: no getToken, the browser sends the access_token cookie.
  const { cookieMode, ...rest } = options;
  const client = createRealtimeClient({ url: "/api/v1/events/stream",
                                        getToken: cookieMode ? undefined : getToken,
                                        channelKey: user, ...rest });
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


async def start_tab(page: Page, svc: PageService, user: str, **options: Any) -> None:
    """Load the test page in ``page`` and start a client for ``user`` there."""
    await page.goto(svc.url(PAGE_PATH))
    await page.wait_for_function("window.ready === true")
    await page.evaluate("([user, options]) => window.startClient(user, options)",
                        [user, {"keepaliveMs": 2000, **options}])


async def log_of(page: Page) -> list[Entry]:
    """The page's record so far."""
    result: list[Entry] = await page.evaluate("window.rtLog")
    return result


async def wait_log(page: Page, what: str, check: Any, timeout: float = 10.0) -> list[Entry]:
    """Until ``check(log)`` holds for the page's record; the record."""
    async def probe() -> tuple[list[Entry]] | None:
        log = await log_of(page)
        return (log,) if check(log) else None  # a tuple: an empty log is still an answer

    result: tuple[list[Entry]] = await eventually(what, probe, timeout)
    return result[0]


async def wait_state(page: Page, state: str, timeout: float = 10.0) -> None:
    await eventually(f"state {state}",
                     lambda: page.evaluate(f"window.client.state === {json.dumps(state)}"),
                     timeout)


async def is_leader(page: Page) -> bool:
    return bool(await page.evaluate("window.client.isLeader"))
