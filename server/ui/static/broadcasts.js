// The Broadcasts page: a page of broadcasts, newest first, filtered by bot and status, live.
// One stream follows the whole list (GET /v1/broadcasts/events): each broadcast as it is
// created, moves or counts outcomes (at most once a second each), so every row's status,
// progress, rate and ETA move, a new broadcast appears at the top of the first page, and an
// older one that moves into the status filter (a pause, a start) in its place, however many
// are sending. The page is read after the stream says `ready` (and again after
// every reconnect), so no change falls between the two. Nothing polls.

import { api, botNames, limitOf, may } from "./api.js";
import {
  clear, duration, field, h, num, progressBar, rate, statusBadge, toast, updateProgressBar, when,
} from "./dom.js";
import { RateMeter, doneOf, eta } from "./live.js";
import { EventStream } from "./sse.js";

const STATUSES = ["scheduled", "queued", "running", "paused", "completed", "failed", "cancelled", "recalling", "recalled"];
const PAGE_SIZE = 20;

export function broadcastsPage(main) {
  const state = { status: "", bot: "", tokens: [""], index: 0, stream: null, rows: new Map(), tbody: null };
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

  // The list's stream: one for the page, opened again only when the bot filter changes (the
  // status filter is applied here: a row whose broadcast leaves it stays, showing its move).
  function follow() {
    state.stream?.stop();
    const path = `/v1/broadcasts/events${state.bot ? `?bot=${encodeURIComponent(state.bot)}` : ""}`;
    state.stream = new EventStream(path, {
      onEvents(batch) {
        for (const event of batch) {
          if (event.type === "ready") load();
          else if (event.type === "broadcast") changed(JSON.parse(event.data));
        }
      },
      onIdle() { for (const r of state.rows.values()) r.idle(); },
      onState(s) {
        body.dataset.stream = s;
        if (s === "failed") load(); // not live (a refusal): the page is shown all the same
      },
    });
    if (!state.stream.start()) load();
  }

  function changed(broadcast) {
    const known = state.rows.get(broadcast.broadcast_id);
    if (known) {
      known.update(broadcast);
      return;
    }
    const fits = (!state.status || broadcast.status === state.status) && (!state.bot || broadcast.bot === state.bot);
    if (state.index !== 0 || !fits || !state.tbody) return;
    // Newest first: a new broadcast goes on top; an older one that moves into the status
    // filter takes its place by id, unless a full page ends before it (a later page's).
    let next = null;
    for (const [id, other] of state.rows) if (id < broadcast.broadcast_id && (!next || id > next.id)) next = { id, el: other.el };
    if (!next && state.rows.size >= PAGE_SIZE) return;
    const r = row(broadcast);
    state.rows.set(broadcast.broadcast_id, r);
    if (next) state.tbody.insertBefore(r.el, next.el);
    else state.tbody.append(r.el);
    count();
  }

  function count() {
    const n = state.rows.size;
    const [shown, empty] = body.firstElementChild?.children || [];
    if (shown) { shown.hidden = n === 0; empty.hidden = n !== 0; }
    summary.textContent = `${n} broadcast${n === 1 ? "" : "s"} on page ${state.index + 1}`;
  }

  let loading = 0;
  async function load() {
    const mine = ++loading;
    summary.textContent = "Loading…";
    let answer;
    try {
      answer = await api("/v1/broadcasts", {
        params: { status: state.status, bot: state.bot, page_size: PAGE_SIZE, page_token: state.tokens[state.index] },
      });
    } catch (error) {
      if (mine === loading) summary.textContent = error.explain ? error.explain() : String(error);
      return;
    }
    if (mine !== loading) return; // a later load (a reconnect, a filter) answers instead
    clear(body);
    state.rows = new Map(answer.broadcasts.map((b) => [b.broadcast_id, row(b)]));
    state.tbody = h("tbody", {}, [...state.rows.values()].map((r) => r.el));
    body.append(table(state.tbody));
    state.tokens[state.index + 1] = answer.next_page_token;
    prev.disabled = state.index === 0;
    next.disabled = !answer.next_page_token;
    count();
  }

  // The table is there even while empty (hidden): a broadcast created meanwhile takes its
  // first row.
  function table(tbody) {
    return h("div", {},
      h("table", { class: "broadcasts" },
        h("caption", { class: "visually-hidden", text: "Broadcasts, newest first" }),
        h("thead", {}, h("tr", {}, ["Broadcast", "Bot", "Status", "Progress", "Rate", "ETA", "Created"].map((t) => h("th", { scope: "col", text: t })))),
        tbody),
      h("p", { class: "empty", text: "No broadcasts match." }));
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
    meter.add(Date.now(), doneOf(progress));
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
    let frame = 0;
    // Each update is the broadcast as the service has it now; the rate is measured over the
    // times they arrive (the list's stream carries at most one per second of each).
    const update = (latest) => {
      // Its rate is measured from when it started sending, not over the time it waited.
      if (latest.status === "running" && progress.status !== "running") meter.idle();
      progress = { status: latest.status, total: latest.total, sent: latest.sent, failed: latest.failed, pending: latest.pending };
      meter.add(Date.now(), doneOf(progress));
      if (!frame) frame = requestAnimationFrame(() => { frame = 0; paint(); });
    };
    const idle = () => { meter.idle(); paint(); };
    return { el, update, idle };
  }

  statusSelect.addEventListener("change", () => { state.status = statusSelect.value; state.tokens = [""]; state.index = 0; load(); });
  botSelect.addEventListener("change", () => { state.bot = botSelect.value; state.tokens = [""]; state.index = 0; follow(); });
  refresh.addEventListener("click", () => { load(); toast("Broadcasts reloaded"); });
  prev.addEventListener("click", () => { state.index = Math.max(0, state.index - 1); load(); });
  next.addEventListener("click", () => { state.index += 1; load(); });
  follow();
  return () => { state.stream?.stop(); state.stream = null; };
}

export function snippet(broadcast) {
  const text = (broadcast.message || "").replace(/\s+/g, " ").trim();
  const kind = broadcast.media_type && broadcast.media_type !== "text" ? `[${broadcast.media_type}] ` : "";
  const short = text.length > 60 ? `${text.slice(0, 59)}…` : text;
  return kind + short;
}
