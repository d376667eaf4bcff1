// The Broadcasts page: a page of broadcasts, newest first, filtered by bot and status. The
// unfinished ones on the page follow their own event streams (the API has no list-level
// stream; at most a few at once, see sse.js), so their progress, rate and ETA move live.
// New broadcasts appear when the list is loaded again (Refresh): nothing polls.

import { api, botNames, limitOf, may } from "./api.js";
import {
  clear, duration, field, h, num, progressBar, rate, statusBadge, toast, updateProgressBar, when,
} from "./dom.js";
import { RateMeter, doneOf, eta, lastProgress } from "./live.js";
import { EventStream, streamsFree } from "./sse.js";

const STATUSES = ["scheduled", "queued", "running", "paused", "completed", "failed", "cancelled", "recalling", "recalled"];
const PAGE_SIZE = 20;
const FOLLOW = ["running", "recalling", "queued", "paused"];
/** The statuses a row follows live, most moving first (a scheduled one waits for its time). */

export function broadcastsPage(main) {
  const state = { status: "", bot: "", tokens: [""], index: 0, streams: [] };
  const statusSelect = h("select", { name: "status" }, h("option", { value: "", text: "Any status" }),
    STATUSES.map((s) => h("option", { value: s, text: s })));
  const botSelect = h("select", { name: "bot" }, h("option", { value: "", text: "Every bot" }),
    botNames().map((b) => h("option", { value: b, text: b })));
  const refresh = h("button", { type: "button", text: "Refresh" });
  const body = h("div", { class: "list", "aria-live": "off" });
  const summary = h("p", { class: "hint", role: "status" });
  const prev = h("button", { type: "button", text: "← Newer", disabled: true });
  const next = h("button", { type: "button", text: "Older →", disabled: true });

  main.append(
    h("div", { class: "page-head" },
      h("h1", { text: "Broadcasts" }),
      may("broadcasts:send") ? h("a", { class: "button primary", href: "#/compose", text: "New broadcast" }) : null),
    h("form", { class: "filters", "aria-label": "Filters", onsubmit: (e) => e.preventDefault() },
      field("Status", statusSelect), botNames().length > 1 ? field("Bot", botSelect) : null,
      h("div", { class: "field" }, h("span", { class: "label-spacer", "aria-hidden": "true", text: " " }), refresh)),
    summary,
    body,
    h("nav", { class: "pager", "aria-label": "Pages" }, prev, next),
  );

  const stopStreams = () => {
    for (const stream of state.streams) stream.stop();
    state.streams = [];
  };

  async function load() {
    stopStreams();
    summary.textContent = "Loading…";
    let answer;
    try {
      answer = await api("/v1/broadcasts", {
        params: { status: state.status, bot: state.bot, page_size: PAGE_SIZE, page_token: state.tokens[state.index] },
      });
    } catch (error) {
      summary.textContent = error.explain ? error.explain() : String(error);
      return;
    }
    clear(body);
    const rows = answer.broadcasts.map(row);
    // The streams go to the broadcasts that move the most first: sending ones, then paused.
    const candidates = rows.filter((r) => r.priority >= 0).sort((a, b) => a.priority - b.priority);
    for (const candidate of candidates) {
      if (streamsFree() === 0) break;
      candidate.live = candidate.follow();
    }
    if (rows.length) body.append(table(rows));
    else body.append(h("p", { class: "empty", text: "No broadcasts match." }));
    state.tokens[state.index + 1] = answer.next_page_token;
    prev.disabled = state.index === 0;
    next.disabled = !answer.next_page_token;
    const live = rows.filter((r) => r.live).length;
    summary.textContent = `${answer.broadcasts.length} broadcast${answer.broadcasts.length === 1 ? "" : "s"} on page ${state.index + 1}` +
      (live ? `; ${live} followed live` : "");
  }

  function table(rows) {
    return h("table", { class: "broadcasts" },
      h("caption", { class: "visually-hidden", text: "Broadcasts, newest first" }),
      h("thead", {}, h("tr", {}, ["Broadcast", "Bot", "Status", "Progress", "Rate", "ETA", "Created"].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, rows.map((r) => r.el)));
  }

  function row(broadcast) {
    const bar = progressBar(broadcast);
    const counts = h("span", { class: "counts" });
    const rateCell = h("td", { "data-label": "Rate" });
    const etaCell = h("td", { "data-label": "ETA" });
    const status = h("td", { "data-label": "Status" }, statusBadge(broadcast.status));
    const meter = new RateMeter();
    const limit = limitOf(broadcast);
    let progress = { status: broadcast.status, total: broadcast.total, sent: broadcast.sent, failed: broadcast.failed, pending: broadcast.pending };
    const paint = () => {
      updateProgressBar(bar, progress);
      counts.textContent = `${num(doneOf(progress))} / ${num(progress.total)}` + (progress.failed ? ` (${num(progress.failed)} failed)` : "");
      const current = progress.status === "running" ? meter.rate : null;
      rateCell.textContent = current === null ? "–" : limit ? `${rate(current)} of ${rate(limit)}` : rate(current);
      etaCell.textContent = progress.status === "running" ? duration(eta(progress, current)) : "–";
      status.replaceChildren(statusBadge(progress.status));
    };
    const el = h("tr", {},
      h("th", { scope: "row", "data-label": "Broadcast" },
        h("a", { href: `#/broadcasts/${broadcast.broadcast_id}`, text: `#${broadcast.broadcast_id}` }),
        h("span", { class: "snippet", text: snippet(broadcast) })),
      h("td", { "data-label": "Bot", text: broadcast.bot }),
      status,
      h("td", { "data-label": "Progress" }, bar, counts),
      rateCell, etaCell,
      h("td", { "data-label": "Created", text: when(broadcast.created_at) }));
    paint();
    const follow = () => {
      let frame = 0;
      const stream = new EventStream(`/v1/broadcasts/${broadcast.broadcast_id}/events`, {
        onEvents(batch) {
          const last = lastProgress(batch);
          if (!last) return;
          progress = last.progress;
          meter.add(last.at, doneOf(progress));
          if (!frame) frame = requestAnimationFrame(() => { frame = 0; paint(); });
        },
        onIdle() { meter.idle(); paint(); },
        onState(s) { el.dataset.stream = s; },
      });
      if (!stream.start()) return false;
      state.streams.push(stream);
      return true;
    };
    return { el, follow, priority: FOLLOW.indexOf(broadcast.status), live: false };
  }

  statusSelect.addEventListener("change", () => { state.status = statusSelect.value; state.tokens = [""]; state.index = 0; load(); });
  botSelect.addEventListener("change", () => { state.bot = botSelect.value; state.tokens = [""]; state.index = 0; load(); });
  refresh.addEventListener("click", () => { load(); toast("Broadcasts reloaded"); });
  prev.addEventListener("click", () => { state.index = Math.max(0, state.index - 1); load(); });
  next.addEventListener("click", () => { state.index += 1; load(); });
  load();
  return stopStreams;
}

export function snippet(broadcast) {
  const text = (broadcast.message || "").replace(/\s+/g, " ").trim();
  const kind = broadcast.media_type && broadcast.media_type !== "text" ? `[${broadcast.media_type}] ` : "";
  const short = text.length > 60 ? `${text.slice(0, 59)}…` : text;
  return kind + short;
}
