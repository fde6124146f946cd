// Compiled by tests/test_client_types.py (tsc --strict): the declarations as an app uses them.
import { createRealtimeClient, type RealtimeClient, type Coordinator } from "../sse_service/web/realtime.js";
import { useRealtimeSync } from "../sse_service/web/vue.js";

const c: RealtimeClient = createRealtimeClient({
  url: "/api/v1/events/stream", getToken: async () => "t", channelKey: "u", keepaliveMs: 30000,
});
const off: () => void = c.on("items:resolved", (data, id) => {
  const s: "resolved" | "failed" = data.status; const t: string = data.title; void s; void t; void id;
});
off();
c.onResync((reason: string) => console.log(reason));
c.onState((s) => { if (s === "degraded") c.reconnectNow(); });
// @ts-expect-error unknown event type
c.on("items:unknown", () => {});
const coord: Coordinator = {
  requestLeadership(onLeader) { onLeader(); }, releaseLeadership() {}, post() {},
  onMessage() {}, close() {},
};
createRealtimeClient({ url: "/x", coordinator: coord });
createRealtimeClient({ url: "/x", coordinator: null });
const sync = useRealtimeSync({ url: "/x" });
const connected: boolean = sync.isConnected.value;
const when: Date | null = sync.lastEventTime.value;
const n: number = sync.reconnectAttempts.value;
void connected; void when; void n;
// @ts-expect-error read-only
sync.state.value = "open";
const at: number | null = c.lastEventTime;
const attempts: number = c.reconnectAttempts;
void at; void attempts;
