// Server-Sent Events over fetch(): EventSource cannot send the Authorization header, and the
// token must never be put in a URL. The stream is read with a ReadableStream and parsed here
// (event:, id:, data:, comments), and reconnects by itself — after a network error, a server
// restart or a drain (event: shutdown) — sending the last id as the Last-Event-ID header, so
// the server resumes right after the last outcome seen. No polling: a stream that is open
// waits for the server.

import { ApiError, headers, unauthorized } from "./api.js";

export const MAX_STREAMS = 4;
/** Open streams at once: HTTP/1.1 browsers keep six connections per server, and the page's
 * own requests need some. */
let open = 0;

const decoder = () => new TextDecoder("utf-8");

/**
 * Follows `path` until its `end` event. Callbacks:
 * - onEvents(events): a batch of {type, id, data} (data is the raw text: parse what you need);
 * - onState(state, detail): "connecting", "live", "reconnecting", "ended", "failed";
 * - onIdle(): a heartbeat arrived (nothing happened for a while).
 */
export class EventStream {
  constructor(path, { onEvents, onState = () => {}, onIdle = () => {} }) {
    this.path = path;
    this.onEvents = onEvents;
    this.onState = onState;
    this.onIdle = onIdle;
    this.lastEventId = "";
    this.stopped = false;
    this.attempt = 0;
    this.controller = null;
    this.holding = false;
  }

  start() {
    if (open >= MAX_STREAMS) return false;
    open += 1;
    this.holding = true;
    this.run();
    return true;
  }

  stop() {
    this.stopped = true;
    this.controller?.abort();
    this.release();
  }

  release() {
    if (this.holding) {
      this.holding = false;
      open -= 1;
    }
  }

  async run() {
    while (!this.stopped) {
      this.onState(this.attempt ? "reconnecting" : "connecting");
      let outcome;
      try {
        outcome = await this.connect();
      } catch (error) {
        if (this.stopped) break;
        if (error instanceof ApiError && ![0, 429, 502, 503, 504].includes(error.status)) {
          this.onState("failed", error);
          break;
        }
        outcome = { retryAfter: error.retryAfter };
      }
      if (this.stopped) break;
      if (outcome.ended) {
        this.onState("ended");
        break;
      }
      this.attempt += 1;
      const backoff = Math.min(15000, 500 * 2 ** Math.min(this.attempt, 5));
      const wait = outcome.soon ? 300 : outcome.retryAfter ? outcome.retryAfter * 1000 : backoff;
      this.onState("reconnecting", { wait });
      await new Promise((resolve) => setTimeout(resolve, wait * (0.8 + Math.random() * 0.4)));
    }
    this.release();
  }

  /** One connection: resolves {ended} at the end event or 204, {soon} on shutdown, {} when cut. */
  async connect() {
    this.controller = new AbortController();
    const extra = { Accept: "text/event-stream" };
    if (this.lastEventId) extra["Last-Event-ID"] = this.lastEventId;
    let response;
    try {
      response = await fetch(this.path, {
        headers: headers(extra),
        signal: this.controller.signal,
        cache: "no-store",
      });
    } catch (error) {
      if (this.stopped) return { ended: true };
      throw new ApiError(0, { detail: "the server could not be reached" });
    }
    if (response.status === 204) return { ended: true };
    if (!response.ok) {
      let problem = { detail: `HTTP ${response.status}` };
      try {
        problem = await response.json();
      } catch {
        /* keep the status */
      }
      const error = new ApiError(response.status, problem);
      error.retryAfter = Number(response.headers.get("Retry-After")) || 0;
      if (response.status === 401) unauthorized(); // signed out, as every other 401
      throw error;
    }
    this.attempt = 0;
    this.onState("live");
    const reader = response.body.getReader();
    const text = decoder();
    let buffer = "";
    let event = { type: "message", id: null, data: [] };
    let result = {};
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += text.decode(value, { stream: true });
        // A chunk ending in "\r" may be half of a "\r\n": that line ends in the next chunk.
        const held = buffer.endsWith("\r") ? "\r" : "";
        const lines = (held ? buffer.slice(0, -1) : buffer).split(/\r\n|\r|\n/);
        buffer = lines.pop() + held;
        const batch = [];
        let idle = false;
        for (const line of lines) {
          if (line === "") {
            if (event.data.length) {
              if (event.id !== null) this.lastEventId = event.id;
              batch.push({ type: event.type, id: event.id, data: event.data.join("\n") });
            }
            event = { type: "message", id: null, data: [] };
            continue;
          }
          if (line.startsWith(":")) {
            if (line.startsWith(": heartbeat")) idle = true;
            continue;
          }
          const colon = line.indexOf(":");
          const name = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (name === "data") event.data.push(value);
          else if (name === "event") event.type = value;
          else if (name === "id") event.id = value;
        }
        if (batch.length) {
          this.onEvents(batch);
          const last = batch[batch.length - 1].type;
          if (last === "end") {
            result = { ended: true };
            break;
          }
          if (last === "shutdown") {
            result = { soon: true };
            break;
          }
          if (last === "error") break;
        }
        if (idle) this.onIdle();
      }
    } catch (error) {
      if (this.stopped) return { ended: true };
      return {};
    } finally {
      this.controller.abort();
    }
    return result;
  }
}

/** The value of a string member of one event's JSON data, without parsing it all. */
export function member(data, name) {
  const key = `"${name}":"`;
  const start = data.indexOf(key);
  if (start < 0) return null;
  const from = start + key.length;
  return data.slice(from, data.indexOf('"', from));
}
