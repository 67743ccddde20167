// One WebSocket to the node (docs/websocket.md): reconnects with a backoff and subscribes again.

import { websocketUrl } from "./api.js";

export class Live {
  // onMessage(message), onState(state, detail) with state "connecting" | "open" | "closed".
  constructor(onMessage, onState) {
    this.onMessage = onMessage;
    this.onState = onState;
    this.patterns = new Map(); // pattern -> wants a snapshot on (re)subscribe
    this.socket = null;
    this.delay = 500;
    this.timer = null;
  }

  connect() {
    clearTimeout(this.timer);
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.close();
    }
    this.onState("connecting", "");
    const socket = new WebSocket(websocketUrl());
    this.socket = socket;
    socket.onopen = () => {
      this.delay = 500;
      this.onState("open", "");
      for (const [pattern, snapshot] of this.patterns) this.send({ type: "subscribe", entity_id: pattern, snapshot });
    };
    socket.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      this.onMessage(message);
    };
    socket.onclose = (event) => {
      const why = event.reason ? `${event.code}: ${event.reason}` : `code ${event.code}`;
      this.onState("closed", why);
      this.timer = setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 10000);
    };
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  subscribe(pattern, snapshot = false) {
    this.patterns.set(pattern, snapshot);
    this.send({ type: "subscribe", entity_id: pattern, snapshot });
  }

  unsubscribe(pattern) {
    if (this.patterns.delete(pattern)) this.send({ type: "unsubscribe", entity_id: pattern });
  }
}

// Whether subscription pattern `pattern` (an id, "prefix*" or "*") matches entity `id`.
export function matches(pattern, id) {
  if (pattern.endsWith("*")) return id.startsWith(pattern.slice(0, -1));
  return pattern === id;
}
