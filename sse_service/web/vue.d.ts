// Types of vue.js: the Vue 3 composable over realtime.js.
import type { ComputedRef, Ref } from "vue";
import type { RealtimeClient, RealtimeOptions, RealtimeState } from "./realtime.js";

export interface RealtimeSync {
  /** The client: on(), onResync(), reconnectNow(). */
  readonly client: RealtimeClient;
  readonly state: Readonly<Ref<RealtimeState>>;
  /** state === "open" (in this tab or in the tab that holds the stream). */
  readonly isConnected: ComputedRef<boolean>;
  /** When the last message arrived, sync:ping included; null before any. */
  readonly lastEventTime: Readonly<Ref<Date | null>>;
  /** Failed attempts since the stream was last open. */
  readonly reconnectAttempts: Readonly<Ref<number>>;
  /** End the client now (the scope's end does it too). */
  stop(): void;
}

/** A realtime client for the current component or effect scope, closed with it. */
export function useRealtimeSync(options: RealtimeOptions): RealtimeSync;
