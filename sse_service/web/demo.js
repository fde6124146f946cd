// The demo page: the owner and the viewer side by side, each through the shipped
// client. Every event only says "re-read this"; each pane then re-reads the
// wishlist from the demo's endpoints with its own user's token, as the PWA
// re-pulls a collection. Text from the database goes in with textContent only.
import { createRealtimeClient } from "/api/v1/events/client/realtime.js";

const EVENTS = ["items:updated", "items:resolved", "wishlists:updated", "marks:updated"];
const MAX_LOG = 100;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function api(token, method, path, body) {
  const init = { method, headers: token ? { Authorization: `Bearer ${token}` } : {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.message || `HTTP ${response.status}`);
  return data;
}

class Pane {
  constructor(root, role, user, streamUrl) {
    this.role = role;
    this.user = user;
    this.streamUrl = streamUrl;
    this.refreshing = null;
    this.again = false;
    this.state = el("span", { "data-state": "connecting" }, "connecting");
    this.title = el("h3", { class: "wishlist-name" });
    this.items = el("ul", { class: "items" });
    this.error = el("p", { class: "error" });
    this.log = el("ol", { class: "log", reversed: "" }); // newest first, numbered in arrival order
    root.append(
      el("h2", {}, `${user.name}, the ${role}`),
      el("p", { class: "state" }, "stream: ", this.state),
      this.title, this.items, ...this.controls(), this.error,
      el("h3", {}, "Events this client received"), this.log,
    );
  }

  controls() {
    if (this.role === "viewer") {
      return [el("p", { class: "note" },
        `${this.user.name} sees the wishlist through a share link: he can mark an item ` +
        "(\"I will buy this\"). The owner is never told.")];
    }
    return [
      this.form("title", "New item", "Add item", "add",
        (title) => this.call("POST", "/demo/api/items", { title })),
      this.form("name", "New wishlist name", "Rename wishlist", "rename",
        (name) => this.call("POST", "/demo/api/wishlist", { name })),
    ];
  }

  form(name, placeholder, label, action, submit) {
    const input = el("input", { name, placeholder, maxlength: name === "title" ? "200" : "100" });
    return el("form", {
      onsubmit: (event) => {
        event.preventDefault();
        if (!input.value.trim()) return;
        // A failure is already shown in the pane (call() writes it there).
        submit(input.value).then(() => { input.value = ""; }, () => {});
      },
    }, input, el("button", { type: "submit", "data-action": action }, label));
  }

  async call(method, path, body) {
    try {
      this.error.textContent = "";
      return await api(this.user.token, method, path, body);
    } catch (error) {
      this.error.textContent = String(error.message || error);
      throw error;
    }
  }

  start() {
    this.client = createRealtimeClient({
      url: this.streamUrl,
      getToken: async () => this.user.token,
      coordinator: null, // two users on one page: no sharing of one stream between them
    });
    for (const name of EVENTS) {
      this.client.on(name, (data, id) => {
        this.record(name, data, id);
        this.refresh();
      });
    }
    this.client.onResync((reason) => {
      this.record("resync", { reason }, null);
      this.refresh();
    });
    this.client.onState((state) => {
      this.state.textContent = state;
      this.state.setAttribute("data-state", state);
    });
    this.refresh();
  }

  record(name, data, id) {
    const text = `${name} ${JSON.stringify(data)}${id ? ` (id ${id})` : ""}`;
    this.log.prepend(el("li", { "data-event": name }, text));
    while (this.log.children.length > MAX_LOG) this.log.lastElementChild.remove();
  }

  // One read at a time; events that arrive meanwhile cause one more read after it.
  refresh() {
    if (this.refreshing) {
      this.again = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      do {
        this.again = false;
        try {
          this.render(await this.call("GET", "/demo/api/view"));
        } catch {
          // shown in the pane by call()
        }
      } while (this.again);
      this.refreshing = null;
    })();
    return this.refreshing;
  }

  render(view) {
    this.title.textContent = view.wishlist.name;
    this.items.replaceChildren(...view.items.map((item) => this.itemRow(item)));
  }

  itemRow(item) {
    const row = el("li", { "data-item-id": item.id, "data-status": item.status },
      el("span", { class: "title" }, item.title),
      el("span", { class: "status" }, item.status));
    if (this.role === "owner") {
      if (item.status !== "resolved") {
        row.append(el("button", {
          "data-action": "resolve",
          onclick: () => this.call("POST", `/demo/api/items/${item.id}/resolve`).catch(() => {}),
        }, "Resolve"));
      }
      return row;
    }
    const others = item.marks - (item.mine ? 1 : 0);
    const text = item.mine ? "marked by you" : others > 0 ? `marked by ${others}` : "not marked";
    row.append(
      el("span", { class: item.mine ? "marks mine" : "marks", "data-marked": String(item.mine) },
        text),
      el("button", {
        "data-action": "mark",
        onclick: () => this.call("POST", `/demo/api/items/${item.id}/mark`).catch(() => {}),
      }, item.mine ? "Unmark" : "Mark"));
    return row;
  }
}

async function main() {
  const session = await api("", "GET", "/demo/api/session");
  for (const role of ["owner", "viewer"]) {
    const root = document.querySelector(`section[data-pane="${role}"]`);
    new Pane(root, role, session.users[role], session.stream).start();
  }
}

main().catch((error) => {
  document.getElementById("fatal").textContent = `The demo could not start: ${error.message}`;
});
