// The Wish With Me realtime client: one Server-Sent Events stream per browser.
//
// A plain ES module with no dependencies and no build step; types in realtime.d.ts.
// It keeps the service's promises on the client side: it remembers the last event id
// (pings included) and always reopens with ?lastEventId=, backs off with full jitter,
// honours `retry:`, refreshes the token on 401 and `auth:expired`, stops for good on
// `sync:closed`, asks the app to pull everything (resync) on first open, on
// `sync:reset` and while degraded, and shares one stream between the tabs.
//
// fetch() + a ReadableStream instead of EventSource: EventSource cannot send an
// Authorization header, cannot tell a 401 from a 503, and reconnects on its own terms.

const DEFAULTS = Object.freeze({
  backoffBaseMs: 1000,
  backoffMaxMs: 30000,
  keepaliveMs: 30000,
  pollIntervalMs: 30000,
  degradeAfterFailures: 4,
});
const MIN_DELAY_MS = 50; // full jitter may draw ~0: never spin
const LOCK_PREFIX = "wishwithme-realtime:";
const STATES = new Set(["connecting", "open", "backoff", "offline", "unauthorized", "closed",
                        "degraded"]);

/**
 * An incremental text/event-stream parser (WHATWG HTML, "Interpreting an event stream").
 * push() takes decoded text in any pieces; onMessage({type, data, id}) is called per
 * dispatched event, and with data === null for a block that only moved the last event id
 * (the spec updates the id even when it dispatches nothing); onRetry(ms) per valid `retry:`.
 */
export function createSSEParser(onMessage, onRetry, initialId = "") {
  let buffer = "";
  let afterCR = false; // a CR ended the last piece: a LF starting the next is the same line end
  let data = "";
  let type = "";
  let id = initialId ?? "";
  let sawField = false;

  function dispatch() {
    if (!sawField) return;
    sawField = false;
    const eventType = type || "message";
    const payload = data;
    data = "";
    type = "";
    if (payload === "") {
      onMessage({ type: null, data: null, id });
      return;
    }
    onMessage({ type: eventType, data: payload.slice(0, -1), id });
  }

  function line(text) {
    if (text === "") return dispatch();
    if (text.charCodeAt(0) === 58) return; // ":" a comment
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? "" : text.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    switch (field) {
      case "event": type = value; sawField = true; break;
      case "data": data += value + "\n"; sawField = true; break;
      case "id": if (!value.includes("\0")) { id = value; sawField = true; } break;
      case "retry": if (/^[0-9]+$/.test(value)) onRetry(Number(value)); break;
      default: break; // unknown fields are ignored
    }
  }

  return {
    push(chunk) {
      buffer += chunk;
      let pos = 0;
      while (pos < buffer.length) {
        if (afterCR) {
          afterCR = false;
          if (buffer.charCodeAt(pos) === 10) { pos += 1; continue; }
        }
        const cr = buffer.indexOf("\r", pos);
        const lf = buffer.indexOf("\n", pos);
        const end = cr < 0 ? lf : lf < 0 ? cr : Math.min(cr, lf);
        if (end < 0) break;
        line(buffer.slice(pos, end));
        pos = end + 1;
        if (end === cr) afterCR = true;
      }
      buffer = buffer.slice(pos);
    },
    get lastEventId() { return id; },
  };
}

/**
 * The default cross-tab coordinator: a Web Lock elects the leader, a BroadcastChannel
 * carries messages; both named after `key` (the user). Null when the browser lacks either.
 */
export function createWebLocksCoordinator(key) {
  const locks = globalThis.navigator?.locks;
  if (!locks || typeof globalThis.BroadcastChannel !== "function") return null;
  const name = LOCK_PREFIX + key;
  const channel = new BroadcastChannel(name);
  let release = null; // resolves the promise that holds the lock
  let pending = null; // AbortController of a request still waiting
  let handler = null;
  channel.onmessage = (event) => { if (handler) handler(event.data); };
  return {
    requestLeadership(onLeader) {
      if (pending || release) return;
      const abort = new AbortController();
      pending = abort;
      locks.request(name, { signal: abort.signal }, () => {
        if (pending === abort) pending = null;
        if (abort.signal.aborted) return undefined;
        // Held until released: the lock passes to the next tab when this page goes.
        return new Promise((resolve) => { release = resolve; onLeader(); });
      }).catch(() => { /* aborted while waiting */ });
    },
    releaseLeadership() {
      if (pending) { pending.abort(); pending = null; }
      if (release) { const r = release; release = null; r(); }
    },
    post(message) { channel.postMessage(message); },
    onMessage(h) { handler = h; },
    close() { this.releaseLeadership(); handler = null; channel.close(); },
  };
}

function positive(value, name) {
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    throw new TypeError(`createRealtimeClient: ${name} must be a positive number`);
  }
  return value;
}

function readOptions(options) {
  if (!options || typeof options.url !== "string" || options.url === "") {
    throw new TypeError("createRealtimeClient: options.url is required");
  }
  if (options.getToken !== undefined && typeof options.getToken !== "function") {
    throw new TypeError("createRealtimeClient: getToken must be a function");
  }
  const o = { ...DEFAULTS };
  for (const key of Object.keys(DEFAULTS)) {
    const value = positive(options[key], key);
    if (value !== undefined) o[key] = value;
  }
  o.backoffMaxMs = Math.max(o.backoffMaxMs, o.backoffBaseMs);
  return o;
}

/** Create a client; it starts connecting (or joins the tab that leads) at once. */
export function createRealtimeClient(options) {
  const o = readOptions(options);
  const getToken = options.getToken ?? null;
  const win = globalThis.window ?? null;
  const doc = globalThis.document ?? null;

  const handlers = new Map();
  const resyncHandlers = new Set();
  const stateHandlers = new Set();
  const activityHandlers = new Set();

  let state = "connecting";
  let lastEventId = null;
  let closed = false;
  let hadOpen = false; // this tab has already been told to pull everything once
  let lastEventTime = null; // when the last message (pings included) arrived
  let remoteAttempts = 0; // a follower's copy of the leader's failure count

  // Cross-tab sharing: the coordinator decides who holds the stream.
  let coordinator = null;
  if (options.coordinator !== undefined) coordinator = options.coordinator;
  else if (typeof options.channelKey === "string" && options.channelKey !== "") {
    coordinator = createWebLocksCoordinator(options.channelKey);
  }
  let leading = false;

  // The leader's connection.
  let generation = 0; // bumped to orphan every async step of an abandoned attempt
  let abort = null;
  let token = null;
  let failures = 0;
  let serverRetryMs = null;
  let final = false; // sync:closed or unauthorized: no reconnect until reconnectNow()
  let lastChunkAt = 0;
  let reconnectTimer = null;
  let watchdogTimer = null;
  let pollTimer = null;

  const watchdogMs = 2 * o.keepaliveMs + Math.min(o.keepaliveMs, 10000);

  // -- local delivery ---------------------------------------------------------

  function call(handler, ...args) {
    try { handler(...args); } catch (error) { reportError(error); }
  }

  function reportError(error) {
    if (typeof globalThis.reportError === "function") globalThis.reportError(error);
    else console.error(error);
  }

  function setState(next) {
    if (next === state) return;
    state = next;
    if (next === "degraded") startPolling(); else stopPolling();
    if (next === "open" && !hadOpen) {
      hadOpen = true;
      resync("initial");
    }
    for (const h of [...stateHandlers]) call(h, next);
  }

  function activity() {
    for (const h of [...activityHandlers]) call(h);
  }

  function resync(reason) {
    for (const h of [...resyncHandlers]) call(h, reason);
  }

  function visible() {
    return !doc || doc.visibilityState !== "hidden";
  }

  function startPolling() {
    if (pollTimer !== null) return;
    if (visible()) resync("degraded");
    pollTimer = setInterval(() => { if (visible()) resync("degraded"); }, o.pollIntervalMs);
  }

  function stopPolling() {
    if (pollTimer !== null) { clearInterval(pollTimer); pollTimer = null; }
  }

  // A message from the stream (leader) or relayed by the leader (follower).
  function deliver(message) {
    lastEventId = message.id === "" ? null : message.id;
    lastEventTime = Date.now();
    activity();
    if (message.type === null) return;
    if (message.type === "sync:reset") return resync("reset");
    if (message.type.startsWith("sync:") || message.type.startsWith("auth:")) return;
    const set = handlers.get(message.type);
    if (!set || set.size === 0) return;
    let data;
    try { data = JSON.parse(message.data); } catch (error) { return reportError(error); }
    for (const h of [...set]) call(h, data, lastEventId);
  }

  // -- the leader's stream ------------------------------------------------------

  function clearTimer(timer) { if (timer !== null) clearTimeout(timer); return null; }

  function stopStream() {
    generation += 1;
    reconnectTimer = clearTimer(reconnectTimer);
    watchdogTimer = clearTimer(watchdogTimer);
    if (abort) { abort.abort(); abort = null; }
  }

  function publish(next) {
    setState(next);
    activity();
    if (leading && coordinator) {
      coordinator.post({ t: "state", state: next, lastEventId, attempts: failures });
    }
  }

  function armWatchdog() {
    lastChunkAt = Date.now();
    watchdogTimer = clearTimer(watchdogTimer);
    // Nothing at all, not even a sync:ping, for two keepalives: the connection is dead
    // even if TCP has not noticed (a proxy or a sleeping laptop swallowed the FIN).
    watchdogTimer = setTimeout(() => { stopStream(); connect(); }, watchdogMs);
  }

  function online() {
    return !globalThis.navigator || globalThis.navigator.onLine !== false;
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
    failures += 1;
    publish(failures >= o.degradeAfterFailures ? "degraded" : "backoff");
    // The server's Retry-After is honoured up to our own cap.
    schedule(Math.max(backoffDelay(), Math.min(retryAfterMs, o.backoffMaxMs)));
  }

  function unauthorized() {
    stopStream();
    final = true;
    publish("unauthorized");
  }

  async function connect() {
    stopStream();
    if (closed || !leading || final) return;
    if (!online()) return publish("offline");
    const gen = generation;
    if (state !== "degraded") publish("connecting");
    if (getToken && token === null) {
      try { token = await getToken(); } catch (_) { token = null; }
      if (gen !== generation) return;
      if (typeof token !== "string" || token === "") { token = null; return unauthorized(); }
    }
    await open(gen, false);
  }

  async function open(gen, refreshed) {
    const url = new URL(options.url, globalThis.location?.href);
    if (lastEventId) url.searchParams.set("lastEventId", lastEventId);
    const headers = { Accept: "text/event-stream" };
    if (token) headers.Authorization = "Bearer " + token;
    const controller = new AbortController();
    abort = controller;
    // A server or proxy that accepts the connection but never answers: give up in time.
    watchdogTimer = clearTimer(watchdogTimer);
    watchdogTimer = setTimeout(() => controller.abort(), watchdogMs);
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
      try { token = await getToken(); } catch (_) { token = null; }
      if (gen !== generation) return;
      if (typeof token !== "string" || token === "") { token = null; return unauthorized(); }
      return open(gen, true);
    }
    const type = response.headers.get("Content-Type") || "";
    if (!response.ok || !response.body || !type.startsWith("text/event-stream")) {
      controller.abort();
      const after = Number(response.headers.get("Retry-After"));
      return failed(Number.isFinite(after) && after > 0 ? after * 1000 : 0);
    }
    failures = 0;
    serverRetryMs = null;
    armWatchdog();
    publish("open");
    await read(gen, response.body);
  }

  async function read(gen, body) {
    const parser = createSSEParser(onMessage, (ms) => { serverRetryMs = ms; }, lastEventId ?? "");
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (gen !== generation) return;
        if (done) break;
        armWatchdog();
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
    publish("backoff");
    schedule(serverRetryMs ?? backoffDelay());
  }

  function onMessage(message) {
    if (coordinator && leading) coordinator.post({ t: "msg", ...message });
    deliver(message);
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

  // -- leadership ---------------------------------------------------------------

  function lead() {
    if (closed) return;
    leading = true;
    final = false;
    failures = 0;
    connect();
  }

  function resign() {
    if (!leading) return;
    leading = false;
    stopStream();
  }

  function onCoordinatorMessage(message) {
    if (closed || !message || typeof message !== "object") return;
    if (leading) {
      if (message.t === "hello") {
        coordinator.post({ t: "state", state, lastEventId, attempts: failures });
      }
      else if (message.t === "reconnect") reconnectNow();
      return;
    }
    if (message.t === "msg") {
      const { type, data, id } = message;
      if (typeof id !== "string") return;
      if (type === null && data === null) deliver({ type, data, id });
      else if (typeof type === "string" && typeof data === "string") deliver({ type, data, id });
    }
    else if (message.t === "state") {
      if (typeof message.lastEventId === "string" && message.lastEventId !== "") {
        lastEventId = message.lastEventId;
      }
      if (Number.isInteger(message.attempts)) remoteAttempts = message.attempts;
      if (STATES.has(message.state)) setState(message.state);
      activity();
    }
  }

  function join() {
    if (coordinator) {
      coordinator.onMessage(onCoordinatorMessage);
      coordinator.requestLeadership(lead);
      coordinator.post({ t: "hello" });
    } else {
      lead();
    }
  }

  // -- network and page lifecycle ----------------------------------------------

  function onOffline() {
    if (!leading || final) return;
    stopStream();
    publish("offline");
  }

  function onOnline() {
    if (!leading || final || state === "open" || state === "connecting") return;
    connect();
  }

  function onVisibility() {
    if (!visible() || closed) return;
    // Background timers are throttled: a visible tab checks at once what they would have.
    if (state === "degraded") resync("degraded");
    if (!leading || final) return;
    const stale = state === "open" && Date.now() - lastChunkAt > watchdogMs;
    if (stale || state === "backoff" || state === "degraded") connect();
  }

  function onPageHide() {
    // A tab that holds a Web Lock or a fetch stream is kept out of the back/forward cache.
    if (coordinator) {
      coordinator.releaseLeadership();
      resign();
    } else {
      stopStream();
    }
  }

  function onPageShow(event) {
    if (!event.persisted || closed) return;
    if (coordinator) { coordinator.requestLeadership(lead); coordinator.post({ t: "hello" }); }
    else if (!final) connect();
  }

  const listeners = [
    [win, "online", onOnline], [win, "offline", onOffline],
    [win, "pagehide", onPageHide], [win, "pageshow", onPageShow],
    [doc, "visibilitychange", onVisibility],
  ].filter(([target]) => target && typeof target.addEventListener === "function");
  for (const [target, name, fn] of listeners) target.addEventListener(name, fn);

  // -- the public object --------------------------------------------------------

  function subscribe(set, handler) {
    if (typeof handler !== "function") throw new TypeError("handler must be a function");
    set.add(handler);
    return () => { set.delete(handler); };
  }

  function reconnectNow() {
    if (closed) return;
    if (!leading) { if (coordinator) coordinator.post({ t: "reconnect" }); return; }
    final = false;
    failures = 0;
    token = state === "unauthorized" ? null : token;
    connect();
  }

  function close() {
    if (closed) return;
    closed = true;
    for (const [target, name, fn] of listeners) target.removeEventListener(name, fn);
    stopStream();
    stopPolling();
    if (coordinator) {
      // Followers take over: the lock passes on as soon as it is released.
      if (leading) coordinator.post({ t: "state", state: "connecting", lastEventId });
      coordinator.close();
    }
    leading = false;
    setState("closed");
    handlers.clear();
    resyncHandlers.clear();
    stateHandlers.clear();
    activityHandlers.clear();
  }

  const client = {
    get state() { return state; },
    get lastEventId() { return lastEventId; },
    get isLeader() { return leading; },
    get reconnectAttempts() { return leading || !coordinator ? failures : remoteAttempts; },
    get lastEventTime() { return lastEventTime; },
    on(type, handler) {
      if (!handlers.has(type)) handlers.set(type, new Set());
      return subscribe(handlers.get(type), handler);
    },
    onResync(handler) { return subscribe(resyncHandlers, handler); },
    onState(handler) { return subscribe(stateHandlers, handler); },
    onActivity(handler) { return subscribe(activityHandlers, handler); },
    close,
    reconnectNow,
  };
  // Let the caller subscribe before the first resync: start on the next microtask.
  queueMicrotask(() => { if (!closed) join(); });
  return client;
}
