// Websockets that come back by themselves, and one indicator of whether the page is live.

import { token } from "./api.js";

// Close codes the server uses (src/shelby/api/realtime.py).
export const CLOSE_UNAUTHORIZED = 4401;
export const CLOSE_FORBIDDEN = 4403;
export const CLOSE_NOT_FOUND = 4404;
export const CLOSE_TOO_SLOW = 1013; // the client fell behind: reconnect and resume

const stateListeners = new Set();
const open = new Set();

/** ``fn(state)``: "live", "connecting", "offline" or "idle", for the page as a whole. */
export function onLiveState(fn) {
  stateListeners.add(fn);
  return () => stateListeners.delete(fn);
}

/** Tells the listeners the state of the page's connections ("idle" when it has none). */
export function announce() {
  const states = [...open].map((c) => c.state);
  let state = "connecting";
  if (states.length === 0) state = "idle";
  else if (states.every((s) => s === "live")) state = "live";
  else if (states.some((s) => s === "offline")) state = "offline";
  stateListeners.forEach((fn) => fn(state));
}

/**
 * Opens ``path()`` (a function, so that a reconnect can resume where it stopped) and calls
 * ``onMessage(parsedJson)`` for each message. ``onClose(code, reason)`` hears the closes
 * that end it for good (unauthorized, not found). Returns a function that closes it.
 */
export function connect(path, { onMessage, onClose } = {}) {
  const conn = { state: "connecting", socket: null, stopped: false, retry: 0, timer: null };
  open.add(conn);

  const start = () => {
    if (conn.stopped) return;
    const url = new URL(path(), window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const t = token();
    if (t) url.searchParams.set("token", t);
    const socket = new WebSocket(url);
    conn.socket = socket;
    socket.addEventListener("open", () => {
      conn.state = "live";
      conn.retry = 0;
      announce();
    });
    socket.addEventListener("message", (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      onMessage?.(msg);
    });
    socket.addEventListener("close", (ev) => {
      if (conn.stopped) return;
      if ([CLOSE_UNAUTHORIZED, CLOSE_FORBIDDEN, CLOSE_NOT_FOUND].includes(ev.code)) {
        conn.state = "offline";
        announce();
        onClose?.(ev.code, ev.reason);
        return;
      }
      conn.state = ev.code === 1000 ? "live" : "connecting";
      if (ev.code === 1000) {
        // The server ended the stream on purpose (the job was deleted, say).
        onClose?.(ev.code, ev.reason);
        open.delete(conn);
        announce();
        return;
      }
      announce();
      const delay = ev.code === CLOSE_TOO_SLOW ? 0 : Math.min(10000, 500 * 2 ** conn.retry);
      conn.retry += 1;
      conn.timer = setTimeout(start, delay);
    });
  };
  start();
  announce();

  return () => {
    conn.stopped = true;
    clearTimeout(conn.timer);
    open.delete(conn);
    conn.socket?.close(1000);
    announce();
  };
}
