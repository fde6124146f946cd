"""realtime.js's text/event-stream parser in Chromium, and typed events end to end."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from tests import factories
from tests.browser import (
    CLIENT_URL,
    browser_fixture,  # noqa: F401 (the "browser" fixture)
    requires_browser,
    start_service,
)
from tests.clientpage import PAGE_PATH, events, page_html, start_tab, wait_log
from tests.harness import settings_for

if TYPE_CHECKING:
    from playwright.async_api import Browser

pytestmark = [pytest.mark.slow, requires_browser]

# Feeds each case's pieces to a parser; returns what it reported.
PARSE = """async ([url, cases]) => {
  const { createSSEParser } = await import(url);
  return cases.map(([pieces, initialId]) => {
    const out = [];
    const parser = createSSEParser((m) => out.push(m), (ms) => out.push({ retry: ms }),
                                   initialId);
    for (const piece of pieces) parser.push(piece);
    return out;
  });
}"""

STREAM = ("retry: 3000\r\nid: m1\r\n\r\n: comment\r\nevent: items:updated\r\n"
          'data: {"id":"a"}\r\nid: 7\r\n\r\nevent: sync:ping\r\ndata: {}\r\nid: m2\r\n\r\n')
EXPECTED_STREAM: list[dict[str, Any]] = [
    {"retry": 3000},
    {"type": None, "data": None, "id": "m1"},
    {"type": "items:updated", "data": '{"id":"a"}', "id": "7"},
    {"type": "sync:ping", "data": "{}", "id": "m2"},
]

CASES: list[tuple[list[str], str, list[dict[str, Any]]]] = [
    (["data: a\n\n"], "", [{"type": "message", "data": "a", "id": ""}]),
    # CRLF split between pieces: one line end, not two.
    (["event: x\r", "\ndata: 1\r", "\n\r", "\n"], "", [{"type": "x", "data": "1", "id": ""}]),
    (["data: a\rdata: b\r\r"], "", [{"type": "message", "data": "a\nb", "id": ""}]),
    (["data:no-space\n\n", "data:  two\n\n"], "",
     [{"type": "message", "data": "no-space", "id": ""},
      {"type": "message", "data": " two", "id": ""}]),
    (["data\n\n"], "", [{"type": "message", "data": "", "id": ""}]),
    (["id: 5\n\n"], "", [{"type": None, "data": None, "id": "5"}]),
    (["id: a\u0000b\ndata: x\n\n"], "old", [{"type": "message", "data": "x", "id": "old"}]),
    (["data: x\n\n"], "7", [{"type": "message", "data": "x", "id": "7"}]),
    (["id\ndata: x\n\n"], "7", [{"type": "message", "data": "x", "id": ""}]),
    (["retry: 15x\nretry: 250\n", ": only a comment\n\n"], "", [{"retry": 250}]),
    (["unknown: field\n\n", "data: end-without-blank-line"], "", []),
    ([STREAM], "", EXPECTED_STREAM),
    (list(STREAM), "", EXPECTED_STREAM),  # one character at a time
]


async def test_parser_follows_the_spec(browser: Browser, database_dsn: str) -> None:
    svc = await start_service(settings_for(database_dsn), {PAGE_PATH: page_html()})
    try:
        page = await (await browser.new_context()).new_page()
        await page.goto(svc.url(PAGE_PATH))
        got = await page.evaluate(PARSE, [CLIENT_URL, [[c[0], c[1]] for c in CASES]])
        for (pieces, _, expected), actual in zip(CASES, got, strict=True):
            assert actual == expected, pieces
    finally:
        await svc.stop()


# Whether each dispatched block had an id: field of its own (the client counts a
# stream as open only from such a message; a proxy's "retry:" answer has none).
CARRIES_ID = """async ([url, text]) => {
  const { createSSEParser } = await import(url);
  const out = [];
  const parser = createSSEParser((m, carriesId) => out.push([m.id, carriesId]), () => {}, "7");
  parser.push(text);
  return out;
}"""


async def test_parser_says_which_blocks_carry_an_id(browser: Browser, database_dsn: str) -> None:
    svc = await start_service(settings_for(database_dsn), {PAGE_PATH: page_html()})
    try:
        page = await (await browser.new_context()).new_page()
        await page.goto(svc.url(PAGE_PATH))
        text = (": service unavailable\nretry: 1000\n\n" "data: x\n\n" "id: 8\ndata: y\n\n"
                "id: a\u0000b\ndata: z\n\n" "id: 9\n\n")
        got = await page.evaluate(CARRIES_ID, [CLIENT_URL, text])
        assert got == [["7", False], ["8", True], ["8", False], ["9", True]]
    finally:
        await svc.stop()


async def test_typed_events_arrive_parsed(browser: Browser, database_dsn: str, db: Any) -> None:
    user = await factories.user(db)
    svc = await start_service(settings_for(database_dsn), {PAGE_PATH: page_html()})
    try:
        page = await (await browser.new_context()).new_page()
        await start_tab(page, svc, user)
        await wait_log(page, "open", lambda log: any(e.get("state") == "open" for e in log))
        sent = [
            ("items:resolved", {"id": "i1", "wishlist_id": "w1", "status": "resolved",
                                "title": "Чайник \U0001f375 «электрический»"}),
            ("marks:updated", {"item_id": "i1", "wishlist_id": "w1"}),
            ("wishlists:updated", {"id": "w1"}),
        ]
        for name, data in sent:
            payload = json.dumps({"event": name, "users": [user], "data": data},
                                 ensure_ascii=False)
            await db.execute("SELECT pg_notify('sse_events', $1)", payload)
        log = await wait_log(page, "three events", lambda log: len(events(log)) == 3)
        assert [(e["type"], e["data"]) for e in events(log)] == sent
        ids = [e["id"] for e in events(log)]
        assert all(ids) and len(set(ids)) == 3
    finally:
        await svc.stop()
