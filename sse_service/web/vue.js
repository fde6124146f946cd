// useRealtimeSync: the Vue 3 composable over realtime.js (types in vue.d.ts).
//
// It imports "vue" by its bare name, as every Vue composable does: the PWA's bundler
// (Vite) resolves it, and a page without a build step maps it with an import map:
//   <script type="importmap">{"imports": {"vue": "/path/to/vue.esm-browser.prod.js"}}</script>
// Taking Vue's functions as an argument instead would let two copies of Vue meet
// (refs of one are not reactive in the other).

import { computed, getCurrentScope, onScopeDispose, readonly, shallowRef } from "vue";
import { createRealtimeClient } from "./realtime.js";

/**
 * Start a realtime client for the current component (or effect scope) and end it with
 * the scope. Returns read-only reactive state and the client itself (for on(),
 * onResync(), reconnectNow()).
 */
export function useRealtimeSync(options) {
  const client = createRealtimeClient(options);
  const state = shallowRef(client.state);
  const lastEventTime = shallowRef(null);
  const reconnectAttempts = shallowRef(0);

  const refresh = () => {
    state.value = client.state;
    const at = client.lastEventTime;
    if (at !== null && (lastEventTime.value === null || lastEventTime.value.getTime() !== at)) {
      lastEventTime.value = new Date(at);
    }
    reconnectAttempts.value = client.reconnectAttempts;
  };
  const offState = client.onState(refresh);
  const offActivity = client.onActivity(refresh);

  const stop = () => {
    offState();
    offActivity();
    client.close();
    state.value = client.state;
  };
  if (getCurrentScope()) onScopeDispose(stop);
  else console.warn("useRealtimeSync() outside a component or effect scope: call stop()");

  return {
    client,
    state: readonly(state),
    isConnected: computed(() => state.value === "open"),
    lastEventTime: readonly(lastEventTime),
    reconnectAttempts: readonly(reconnectAttempts),
    stop,
  };
}
