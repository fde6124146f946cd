// The Wish With Me realtime client: one Server-Sent Events stream per browser.
//
// Plain ES modules with no dependencies and no build step; types in realtime.d.ts.
// It keeps the service's promises on the client side: it remembers the last event id
// (pings included) and always reopens with ?lastEventId=, backs off with full jitter,
// honours `retry:`, refreshes the token on 401 and `auth:expired`, stops for good on
// `sync:closed` (in every tab of the browser), asks the app to pull everything (resync)
// on first open, on `sync:reset`, while degraded and after the back/forward cache, and
// shares one stream between the tabs.
//
// This module is the public object and the sharing between tabs; connection.js holds
// the stream, sseparser.js parses it, coordinator.js elects the tab that holds it.

import { createConnection } from "./connection.js";
import { createWebLocksCoordinator } from "./coordinator.js";

export { createWebLocksCoordinator } from "./coordinator.js";
export { createSSEParser } from "./sseparser.js";

const DEFAULTS = Object.freeze({
  backoffBaseMs: 1000,
  backoffMaxMs: 30000,
  keepaliveMs: 30000,
  pollIntervalMs: 30000,
  degradeAfterFailures: 4,
});
const STATES = new Set(["connecting", "open", "backoff", "offline", "unauthorized", "closed",
                        "degraded"]);

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
  o.url = options.url;
  o.getToken = options.getToken;
  return o;
}

/** Create a client; it starts on the next microtask (or joins the tab that leads). */
export function createRealtimeClient(options) {
  const o = readOptions(options);
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
  // This browser's stream was evicted (sync:closed), seen here or relayed: whichever
  // tab leads next must not reconnect (it would evict another device) until reconnectNow().
  let evicted = false;
  let pollTimer = null;

  // Cross-tab sharing: the coordinator decides which tab holds the stream.
  let coordinator = null;
  if (options.coordinator !== undefined) coordinator = options.coordinator;
  else if (typeof options.channelKey === "string" && options.channelKey !== "") {
    coordinator = createWebLocksCoordinator(options.channelKey);
  }
  let leading = false;

  const connection = createConnection(o, {
    lastEventId: () => lastEventId,
    message(message) {
      if (coordinator && leading) coordinator.post({ t: "msg", ...message });
      deliver(message);
    },
    state(next) {
      if (next === "closed" && !closed) evicted = true; // only sync:closed gets here
      setState(next);
      activity();
      if (leading && coordinator) postState(next);
    },
  });

  function postState(current) {
    coordinator.post({ t: "state", state: current, lastEventId, attempts: connection.failures,
                       evicted });
  }

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

  // -- leadership ---------------------------------------------------------------

  function lead() {
    if (closed) return;
    leading = true;
    connection.start(evicted);
  }

  function resign() {
    if (!leading) return;
    leading = false;
    connection.stop();
  }

  function onCoordinatorMessage(message) {
    if (closed || !message || typeof message !== "object") return;
    if (leading) {
      if (message.t === "hello") {
        postState(state);
      } else if (message.t === "reconnect") {
        evicted = false;
        connection.reconnectNow();
      } else if (message.t === "visible") {
        // A follower became visible: our own timers may be throttled in the background.
        connection.visible();
      }
      return;
    }
    if (message.t === "msg") {
      const { type, data, id } = message;
      if (typeof id !== "string") return;
      if (type === null && data === null) deliver({ type, data, id });
      else if (typeof type === "string" && typeof data === "string") deliver({ type, data, id });
    } else if (message.t === "state") {
      if (typeof message.lastEventId === "string" && message.lastEventId !== "") {
        lastEventId = message.lastEventId;
      }
      if (Number.isInteger(message.attempts)) remoteAttempts = message.attempts;
      if (typeof message.evicted === "boolean") evicted = message.evicted;
      if (message.state === "closed") evicted = true; // a leader's close() posts "connecting"
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

  function onVisibility() {
    if (!visible() || closed) return;
    if (state === "degraded") resync("degraded");
    if (leading) connection.visible();
    else if (coordinator) coordinator.post({ t: "visible" });
  }

  function onPageHide() {
    // A tab that holds a Web Lock or a fetch stream is kept out of the back/forward cache.
    if (coordinator) coordinator.releaseLeadership();
    resign();
  }

  function onPageShow(event) {
    if (!event.persisted || closed) return;
    if (coordinator) {
      coordinator.requestLeadership(lead);
      coordinator.post({ t: "hello" });
    } else {
      lead();
    }
    // While in the back/forward cache this page got no relayed message (BroadcastChannel
    // drops them), and nothing says which: pull everything.
    resync("restored");
  }

  const listeners = [
    [win, "online", () => connection.online()], [win, "offline", () => connection.offline()],
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

  function close() {
    if (closed) return;
    closed = true;
    for (const [target, name, fn] of listeners) target.removeEventListener(name, fn);
    connection.stop();
    stopPolling();
    if (coordinator) {
      // Followers take over: the lock passes on as soon as it is released.
      if (leading) coordinator.post({ t: "state", state: "connecting", lastEventId, evicted });
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
    get reconnectAttempts() {
      return leading || !coordinator ? connection.failures : remoteAttempts;
    },
    get lastEventTime() { return lastEventTime; },
    on(type, handler) {
      if (!handlers.has(type)) handlers.set(type, new Set());
      return subscribe(handlers.get(type), handler);
    },
    onResync(handler) { return subscribe(resyncHandlers, handler); },
    onState(handler) { return subscribe(stateHandlers, handler); },
    onActivity(handler) { return subscribe(activityHandlers, handler); },
    close,
    reconnectNow() {
      if (closed) return;
      evicted = false;
      if (leading) connection.reconnectNow();
      else if (coordinator) coordinator.post({ t: "reconnect" });
    },
  };
  // Let the caller subscribe before the first resync: start on the next microtask.
  queueMicrotask(() => { if (!closed) join(); });
  return client;
}
