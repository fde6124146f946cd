// The text/event-stream parser of realtime.js (a plain ES module, no dependencies).
// It sees every field, so the client keeps the id of each message (pings included)
// and the server's `retry:`, which a native EventSource hides or applies on its own.

/**
 * An incremental text/event-stream parser (WHATWG HTML, "Interpreting an event stream").
 * push() takes decoded text in any pieces; onMessage({type, data, id}) is called per
 * dispatched event, and with data === null for a block that only moved the last event id
 * (the spec updates the id even when it dispatches nothing); its second argument says
 * whether the block had an `id:` field itself. onRetry(ms) per valid `retry:`.
 */
export function createSSEParser(onMessage, onRetry, initialId = "") {
  let buffer = "";
  let afterCR = false; // a CR ended the last piece: a LF starting the next is the same line end
  let data = "";
  let type = "";
  let id = initialId ?? "";
  let sawField = false;
  let sawId = false; // this block had an id: field

  function dispatch() {
    if (!sawField) return;
    sawField = false;
    const carriesId = sawId;
    sawId = false;
    const eventType = type || "message";
    const payload = data;
    data = "";
    type = "";
    if (payload === "") {
      onMessage({ type: null, data: null, id }, carriesId);
      return;
    }
    onMessage({ type: eventType, data: payload.slice(0, -1), id }, carriesId);
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
      case "id": if (!value.includes("\0")) { id = value; sawField = true; sawId = true; } break;
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
