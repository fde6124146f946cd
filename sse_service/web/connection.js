// The stream of the tab that holds it: fetch, parse, reconnect (part of realtime.js).
//
// fetch() and a ReadableStream instead of EventSource: EventSource cannot send an
// Authorization header, cannot tell a 401 from a 503, gives up for good on either,
// and reconnects on its own terms. Here every reopen carries ?lastEventId=, failures
// back off with full jitter up to a cap, the server's `retry:` is honoured, and a
// watchdog notices a connection that went silent without closing.

import { createSSEParser } from "./sseparser.js";

const MIN_DELAY_MS = 50; // full jitter may draw ~0: never spin

function online() {
  return !globalThis.navigator || globalThis.navigator.onLine !== false;
}

/**
 * The connection loop. `o`: the client's options (url, getToken, backoff*, keepaliveMs,
 * degradeAfterFailures). `hooks.message(m)` gets every parsed message, `hooks.state(s)`
 * every state it enters (again after each failed attempt), `hooks.lastEventId()` says
 * where to resume.
 */
export function createConnection(o, hooks) {
  const getToken = o.getToken ?? null;
  // Two keepalives of silence plus a margin: the connection is dead even if TCP has
  // not noticed (a proxy or a sleeping laptop swallowed the FIN).
  const watchdogMs = 2 * o.keepaliveMs + Math.min(o.keepaliveMs, 10000);

  let running = false;
  let state = "connecting";
  let generation = 0; // bumped to orphan every async step of an abandoned attempt
  let abort = null;
  let token = null;
  let failures = 0;
  let serverRetryMs = null;
  let notBefore = 0; // Date.now() before which the server asked us not to come back
  let final = false; // sync:closed or unauthorized: no reconnect until reconnectNow()
  let lastChunkAt = 0;
  let reconnectTimer = null;
  let watchdogTimer = null;

  function clearTimer(timer) { if (timer !== null) clearTimeout(timer); return null; }

  function stopStream() {
    generation += 1;
    reconnectTimer = clearTimer(reconnectTimer);
    watchdogTimer = clearTimer(watchdogTimer);
    if (abort) { abort.abort(); abort = null; }
  }

  function publish(next) {
    state = next;
    hooks.state(next);
  }

  function armWatchdog(onSilence) {
    watchdogTimer = clearTimer(watchdogTimer);
    watchdogTimer = setTimeout(onSilence, watchdogMs);
  }

  function schedule(delayMs) {
    reconnectTimer = clearTimer(reconnectTimer);
    reconnectTimer = setTimeout(() => { reconnectTimer = null; connect(); }, delayMs);
  }

  function backoffDelay() {
    const ceiling = Math.min(o.backoffMaxMs, o.backoffBaseMs * 2 ** Math.max(0, failures - 1));
    return Math.max(MIN_DELAY_MS, Math.random() * ceiling); // full jitter
  }

  function failed(retryAfterMs = 0) {
    stopStream();
    failures += 1;
    publish(failures >= o.degradeAfterFailures ? "degraded" : "backoff");
    // The server's Retry-After (or retry:) is honoured up to our own cap, also by
    // visible() and online(), which otherwise reconnect at once.
    const wait = Math.min(retryAfterMs, o.backoffMaxMs);
    notBefore = wait > 0 ? Date.now() + wait : 0;
    schedule(Math.max(backoffDelay(), wait));
  }

  /** Reconnect now, or when the server's Retry-After allows. */
  function connectSoon() {
    const wait = notBefore - Date.now();
    if (wait <= 0) return connect();
    if (state === "offline") publish(failures >= o.degradeAfterFailures ? "degraded" : "backoff");
    schedule(wait);
  }

  function unauthorized() {
    stopStream();
    final = true;
    publish("unauthorized");
  }

  async function freshToken(gen) {
    // A getToken() that never settles must not leave us `connecting` for ever: after
    // as long as the watchdog gives a silent server, it counts as a failed attempt.
    let timer = null;
    let timedOut = false;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(() => { timedOut = true; resolve(null); }, watchdogMs);
    });
    try {
      token = await Promise.race([(async () => getToken())(), timeout]);
    } catch (_) {
      token = null;
    } finally {
      clearTimeout(timer);
    }
    if (gen !== generation) return false;
    if (timedOut) {
      token = null;
      failed();
      return false;
    }
    if (typeof token === "string" && token !== "") return true;
    token = null;
    unauthorized();
    return false;
  }

  async function connect() {
    stopStream();
    if (!running || final) return;
    if (!online()) return publish("offline");
    const gen = generation;
    if (state !== "degraded") publish("connecting");
    if (getToken && token === null && !(await freshToken(gen))) return;
    await open(gen, false);
  }

  async function open(gen, refreshed) {
    const url = new URL(o.url, globalThis.location?.href);
    const lastEventId = hooks.lastEventId();
    if (lastEventId) url.searchParams.set("lastEventId", lastEventId);
    const headers = { Accept: "text/event-stream" };
    if (token) headers.Authorization = "Bearer " + token;
    const controller = new AbortController();
    abort = controller;
    // A server or proxy that accepts the connection but never answers: give up in time.
    armWatchdog(() => controller.abort());
    let response;
    try {
      response = await fetch(url, { headers, credentials: "same-origin", cache: "no-store",
                                    signal: controller.signal });
    } catch (_) {
      if (gen === generation) failed();
      return;
    }
    if (gen !== generation) return;
    if (response.status === 401) {
      controller.abort();
      // One fresh token per 401; a second 401 in a row is not going to change.
      if (!getToken || refreshed) return unauthorized();
      if (await freshToken(gen)) await open(gen, true);
      return;
    }
    const type = response.headers.get("Content-Type") || "";
    if (!response.ok || !response.body || !type.startsWith("text/event-stream")) {
      controller.abort();
      const after = Number(response.headers.get("Retry-After"));
      return failed(Number.isFinite(after) && after > 0 ? after * 1000 : 0);
    }
    serverRetryMs = null;
    await read(gen, response.body, lastEventId);
  }

  // Headers alone do not make a stream open: behind nginx a service that is down
  // answers 200 text/event-stream with only a comment and `retry:`. The service's
  // first message always carries an id (sync:ping or sync:reset): that one opens it.
  async function read(gen, body, lastEventId) {
    let opened = false;
    const parser = createSSEParser((message, carriesId) => {
      if (!opened && carriesId) {
        opened = true;
        failures = 0;
        notBefore = 0;
        publish("open");
        if (gen !== generation) return;
      }
      onMessage(message);
    }, (ms) => { serverRetryMs = ms; }, lastEventId ?? "");
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    const silence = () => (opened ? connect() : failed());
    lastChunkAt = Date.now();
    armWatchdog(silence);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (gen !== generation) return;
        if (done) break;
        lastChunkAt = Date.now();
        armWatchdog(silence);
        parser.push(value);
        if (gen !== generation) return; // a message ended this stream (auth:expired, ...)
      }
    } catch (_) {
      if (gen !== generation) return;
    }
    // The stream ended (server shutdown, proxy timeout, network): come back after the
    // server's retry, jittered by the server itself, or after a short jittered wait.
    stopStream();
    if (!online()) return publish("offline");
    // Never opened (a proxy's "unavailable" answer): a failed attempt, paced by its retry:.
    if (!opened) return failed(serverRetryMs ?? 0);
    publish("backoff");
    schedule(serverRetryMs ?? backoffDelay());
  }

  function onMessage(message) {
    hooks.message(message);
    if (message.type === "auth:expired") {
      // The stream ends now; reopen at once with a fresh token, resuming.
      token = null;
      connect();
    } else if (message.type === "sync:closed") {
      // Another device or tab took our place; coming back would evict someone else.
      stopStream();
      final = true;
      publish("closed");
    }
  }

  return {
    get failures() { return failures; },
    /**
     * Start (this tab now holds the stream). `evicted`: another tab of this browser was
     * evicted (sync:closed); start closed, and only reconnectNow() reopens.
     */
    start(evicted = false) {
      running = true;
      failures = 0;
      if (evicted) {
        stopStream();
        final = true;
        publish("closed");
        return;
      }
      connect();
    },
    /** Stop: the request, every timer; nothing reopens until start(). */
    stop() {
      running = false;
      stopStream();
    },
    reconnectNow() {
      if (!running) return;
      final = false;
      failures = 0;
      if (state === "unauthorized") token = null;
      connect();
    },
    offline() {
      if (!running || final) return;
      stopStream();
      publish("offline");
    },
    online() {
      if (!running || final || state === "open" || state === "connecting") return;
      connectSoon();
    },
    /** The page became visible: background timers are throttled, so check at once. */
    visible() {
      if (!running || final) return;
      const stale = state === "open" && Date.now() - lastChunkAt > watchdogMs;
      if (stale) connect();
      else if (state === "backoff" || state === "degraded") connectSoon();
    },
  };
}
