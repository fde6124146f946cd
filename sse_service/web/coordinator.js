// Who holds the stream among a browser's tabs: the default coordinator of realtime.js.
//
// A Web Lock elects the leader (the lock passes to a waiting tab when its holder's
// page closes, crashes or releases it on pagehide); a BroadcastChannel carries the
// leader's messages to the other tabs. Both are per origin and named after the key
// (the user), so two users signed in to two tabs never share anything. A replacement
// (RxDB's leader election, say) implements the same five methods (realtime.d.ts).

const LOCK_PREFIX = "wishwithme-realtime:";

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
