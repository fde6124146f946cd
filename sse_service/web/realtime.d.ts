// Types of realtime.js, the Wish With Me realtime client (served beside it).

/**
 * - `connecting`: opening the stream (or waiting to hear from the tab that holds it);
 * - `open`: the service's first message (with an id) arrived: events flow;
 * - `backoff`: the stream ended or failed; a retry is scheduled;
 * - `offline`: the browser is offline; it reconnects on `online`;
 * - `unauthorized`: no usable token (getToken failed, or a fresh token got a 401 too);
 *   nothing happens until `reconnectNow()`;
 * - `closed`: `close()` was called, or the server evicted this browser (`sync:closed`:
 *   the user opened too many streams elsewhere; every tab of the browser stays closed,
 *   also when another tab takes the stream over); `reconnectNow()` reopens after eviction;
 * - `degraded`: the stream keeps failing; the app is asked to pull (resync) every
 *   `pollIntervalMs` while visible, and retries keep backing off up to `backoffMaxMs`.
 */
export type RealtimeState =
  | "connecting" | "open" | "backoff" | "offline" | "unauthorized" | "closed" | "degraded";

/** A message between tabs; opaque to a coordinator, which only carries it. */
export type CoordinatorMessage = unknown;

/**
 * Who holds the stream. Replaceable: e.g. RxDB's leader election plus its BroadcastChannel.
 */
export interface Coordinator {
  /** Ask to lead; `onLeader` runs once when this tab becomes the leader. */
  requestLeadership(onLeader: () => void): void;
  /** Give leadership up, or stop waiting for it (pagehide, close). */
  releaseLeadership(): void;
  /** Send a structured-cloneable message to every other tab (not to this one). */
  post(message: CoordinatorMessage): void;
  /** The one handler for messages from the other tabs. */
  onMessage(handler: (message: CoordinatorMessage) => void): void;
  /** Release leadership and stop carrying messages; `client.close()` calls it. */
  close(): void;
}

export interface RealtimeOptions {
  /** The stream's URL, e.g. "/api/v1/events/stream". */
  url: string;
  /** An access token (Authorization: Bearer). Omitted: cookie mode (same-origin credentials). */
  getToken?: () => Promise<string>;
  /**
   * Cross-tab key (BroadcastChannel and Web Lock name), typically the user id. Without it
   * (or without Web Locks/BroadcastChannel) each tab has its own stream.
   */
  channelKey?: string;
  /** null: no cross-tab sharing; default: Web Locks + BroadcastChannel when available. */
  coordinator?: Coordinator | null;
  /** First backoff ceiling after a failure (full jitter), doubling per failure. Default 1000. */
  backoffBaseMs?: number;
  /** The cap of the backoff. Default 30000. */
  backoffMaxMs?: number;
  /** The server's keepalive interval (SSE_KEEPALIVE_INTERVAL); the watchdog waits
   * about 2.3x it for any byte before reconnecting. Default 30000. */
  keepaliveMs?: number;
  /** While degraded: how often to emit a resync (only while the page is visible). Default 30000. */
  pollIntervalMs?: number;
  /** Consecutive failed attempts before `degraded`. Default 4. */
  degradeAfterFailures?: number;
}

export interface RealtimeEventMap {
  "items:updated": { id: string; wishlist_id: string };
  "items:resolved": { id: string; wishlist_id: string; status: "resolved" | "failed"; title: string };
  "wishlists:updated": { id: string };
  "marks:updated": { item_id: string; wishlist_id: string };
}

/**
 * Why the app should pull everything: first open, a `sync:reset`, polling while degraded,
 * or the page came back from the back/forward cache (it missed what other tabs relayed).
 */
export type ResyncReason = "initial" | "reset" | "degraded" | "restored";

export interface RealtimeClient {
  readonly state: RealtimeState;
  /** The last event id seen (pings included), by this tab or relayed to it. */
  readonly lastEventId: string | null;
  /** Whether this tab holds the stream. */
  readonly isLeader: boolean;
  /** Failed attempts since the stream was last open (0 while open); the leader's count
   * in a tab that shares another tab's stream. */
  readonly reconnectAttempts: number;
  /** When the last message arrived (Date.now() ms), `sync:ping` included: the last sign of
   * life of the stream, in this tab or relayed to it. null before any. */
  readonly lastEventTime: number | null;
  /** Subscribe to one event type; returns the unsubscribe function. */
  on<K extends keyof RealtimeEventMap>(
    type: K, handler: (data: RealtimeEventMap[K], id: string | null) => void): () => void;
  /** Pull everything: on first open, on `sync:reset`, periodically while degraded, and
   * when the page is restored from the back/forward cache. */
  onResync(handler: (reason: ResyncReason) => void): () => void;
  onState(handler: (state: RealtimeState) => void): () => void;
  /** After any message (pings included), state report or failed attempt: a cue to read
   * `lastEventTime` and `reconnectAttempts` again. */
  onActivity(handler: () => void): () => void;
  /** Stop for good: every timer, listener and request ends; nothing reopens. */
  close(): void;
  /** Reconnect at once (also after `unauthorized` or an eviction). */
  reconnectNow(): void;
}

/** Create a client; it starts on the next microtask, so subscribe right away. */
export function createRealtimeClient(options: RealtimeOptions): RealtimeClient;

/** The default coordinator for `key`, or null when Web Locks or BroadcastChannel is missing. */
export function createWebLocksCoordinator(key: string): Coordinator | null;

export interface SSEMessage {
  /** The event type ("message" when none), or null for a block that only set the id. */
  type: string | null;
  data: string | null;
  /** The stream's last event id after this block. */
  id: string;
}

/** The incremental text/event-stream parser the client uses (WHATWG HTML rules). */
export function createSSEParser(
  onMessage: (message: SSEMessage, carriesId: boolean) => void, onRetry: (ms: number) => void,
  initialId?: string): { push(text: string): void; readonly lastEventId: string };
