// One broadcast, live: counters and outcome breakdown, the rate over time against the bot's
// limit, per-variant figures when the API reports them, the latest outcomes (a bounded window:
// at most FEED rows are ever in the page, however many recipients), pause, resume, cancel,
// recall and edit (each confirmed), the CSV export and who did what.

import { api, download, limitOf, may } from "./api.js";
import {
  clear, confirmDialog, duration, field, h, num, progressBar, rate, showErrors, statusBadge,
  toast, updateProgressBar, when, clearErrors,
} from "./dom.js";
import { RateChart } from "./chart.js";
import { ACTIVE, RateMeter, doneOf, eta } from "./live.js";
import { EventStream, member } from "./sse.js";
import { bubble } from "./telegram.js";
import { variantsSection } from "./variants.js";

const FEED = 50;
const REPLAY_LIMIT = 10000;
/** A finished broadcast is replayed (for its chart and feed) only up to this many recipients. */
const OUTCOMES = ["sent", "blocked", "deactivated", "cant_initiate", "kicked", "chat_not_found", "bad_request", "failed", "pending"];

const MOVES = {
  pause: { label: "Pause", when: ["queued", "running"], body: "Nothing more is sent until it is resumed; sends in flight finish." },
  resume: { label: "Resume", when: ["paused"], body: "Sending goes on where it stopped." },
  cancel: { label: "Cancel", when: ["scheduled", "queued", "running", "paused"], danger: true, body: "Recipients not sent yet will never be sent. This cannot be undone." },
  recall: { label: "Recall", when: ["queued", "running", "paused", "completed", "cancelled", "failed"], danger: true, body: "Its messages are deleted from every chat that received them (Telegram allows it for 48 hours). This cannot be undone." },
};

export function broadcastPage(main, idText) {
  const id = Number(idText);
  let broadcast = null;
  let stream = null;
  let lastCursor = "";
  let progress = null;
  // Outcomes counted from the stream. A broadcast being sent is followed from now (nothing is
  // replayed): these count on from `base`, its counts when the page read it — the delivery
  // outcomes' from the stream's opening, which holds exactly those its counters do.
  const counts = new Map();
  const recallCounts = new Map();
  const editCounts = new Map();
  let editVersion = 1; // the content version whose edit the Edit breakdown counts (the latest)
  let base = {};
  const feed = []; // raw data of the newest FEED outcomes, oldest first
  let feedDirty = false;
  let frame = 0;
  const meter = new RateMeter();

  const heading = h("h1", { text: `Broadcast #${id}` });
  const badge = h("span");
  const liveState = h("span", { class: "live-state", role: "status", "aria-live": "polite" });
  const meta = h("dl", { class: "meta" });
  const message = h("blockquote", { class: "message" });
  const controls = h("div", { class: "toolbar", role: "group", "aria-label": "Control the broadcast" });
  const figures = h("dl", { class: "figures" });
  const bar = progressBar({ total: 0, sent: 0, failed: 0 });
  const canvas = h("canvas", { class: "chart", role: "img", "aria-label": "Outcomes per second" });
  const chart = new RateChart(canvas);
  const chartNote = h("p", { class: "hint" });
  const breakdown = h("div", { class: "breakdown" });
  const variants = h("div");
  const feedBody = h("tbody");
  const feedNote = h("p", { class: "hint" });
  const history = h("ol", { class: "history" });
  const csvOutcome = h("select", { name: "outcome" }, h("option", { value: "", text: "Every recipient" }),
    OUTCOMES.map((o) => h("option", { value: o, text: o })));
  const csvButton = h("button", { type: "button", text: "Export CSV" });
  const error = h("p", { class: "form-error", role: "alert", hidden: true });

  main.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/broadcasts", text: "← Broadcasts" })),
    h("div", { class: "page-head" }, heading, badge, liveState),
    error,
    controls,
    h("section", { class: "card", "aria-labelledby": "figures-title" },
      h("h2", { id: "figures-title", text: "Progress" }), bar, figures),
    h("div", { class: "columns" },
      h("section", { class: "card", "aria-labelledby": "chart-title" },
        h("h2", { id: "chart-title", text: "Rate over time" }), canvas, chartNote),
      h("section", { class: "card", "aria-labelledby": "outcomes-title" },
        h("h2", { id: "outcomes-title", text: "Outcomes" }), breakdown)),
    variants,
    h("section", { class: "card", "aria-labelledby": "feed-title" },
      h("h2", { id: "feed-title", text: "Latest outcomes" }), feedNote,
      h("div", { class: "scroll feed-window", tabindex: "0", role: "region", "aria-label": "Latest outcomes" }, h("table", { class: "feed" },
        h("thead", {}, h("tr", {}, ["User", "Outcome", "Message", "At", "Error"].map((t) => h("th", { scope: "col", text: t })))),
        feedBody))),
    h("div", { class: "columns" },
      h("section", { class: "card", "aria-labelledby": "about-title" },
        h("h2", { id: "about-title", text: "Message" }), message, meta, previewer()),
      h("section", { class: "card", "aria-labelledby": "history-title" },
        h("h2", { id: "history-title", text: "Who did what" }), history,
        h("h2", { text: "Report" }),
        h("div", { class: "inline" }, field("Recipients", csvOutcome), csvButton))),
  );

  /** "As one user got it": the stored broadcast previewed for a user (its latest content, in
   * the variant its workers send that user), for a token that may send. */
  function previewer() {
    if (!may("broadcasts:send")) return null;
    const user = h("input", { type: "text", inputmode: "numeric", name: "preview_user" });
    const box = h("div", { class: "preview", "aria-live": "polite" });
    const show = async () => {
      box.replaceChildren();
      try {
        const answer = await api("/v1/preview", { method: "POST", body: { broadcast_id: id, user_id: Number(user.value.trim()) } });
        box.replaceChildren(bubble({
          text: answer.text, parseMode: answer.parse_mode, mediaType: broadcast.media_type,
          mediaLabel: broadcast.media_url, albumCaptions: answer.album_captions, botName: broadcast.bot,
        }));
        if (answer.variant) box.prepend(h("p", { class: "hint", text: `Variant ${answer.variant}` }));
      } catch (failure) {
        box.replaceChildren(h("p", { class: "form-error", role: "alert", text: failure.status === 404 ? "The service does not know this user." : failure.explain ? failure.explain() : String(failure) }));
      }
    };
    return h("div", { class: "inline as-received" },
      field("As received by user id", user), h("button", { type: "button", text: "Show", onclick: show }), box);
  }

  function render() {
    const b = broadcast;
    badge.replaceChildren(statusBadge(progress.status));
    const limit = limitOf(b);
    const running = progress.status === "running" || progress.status === "recalling" || b.editing;
    const current = running ? meter.rate : null;
    updateProgressBar(bar, progress);
    const items = [
      ["Total", num(progress.total)], ["Sent", num(progress.sent)], ["Failed", num(progress.failed)],
      ["Pending", num(progress.pending)],
      ["Rate", current === null ? "–" : limit ? `${rate(current)} of ${rate(limit)}` : rate(current)],
      ["ETA", progress.status === "running" ? duration(eta(progress, current)) : "–"],
    ];
    if (progress.recalled !== undefined || b.recall_at) items.push(["Recalled", num(progress.recalled ?? b.recalled)]);
    if (progress.edited !== undefined || b.content_version > 1) items.push(["Edited", num(progress.edited ?? b.edited)]);
    if (b.allow_paid_broadcast) items.push(["Stars spent (est.)", `${(b.stars_spent_estimate || 0).toFixed(1)}${b.max_stars ? ` of ${b.max_stars}` : ""}`]);
    figures.replaceChildren(...items.flatMap(([k, v]) => [h("div", { class: "figure" }, h("dt", { text: k }), h("dd", { text: v, dataset: { figure: k.toLowerCase() } }))]));
    chart.limit = limit;
    chart.schedule();
    renderBreakdown();
    renderControls();
  }

  function renderBreakdown() {
    const merged = (fromApi, from, live) => {
      const all = new Map(Object.entries(fromApi || {}));
      for (const k of new Set([...Object.keys(from || {}), ...live.keys()])) {
        all.set(k, Math.max(all.get(k) || 0, ((from || {})[k] || 0) + (live.get(k) || 0)));
      }
      return all;
    };
    const sections = [
      ["Delivery", merged(broadcast.outcome_counts, base.outcome_counts, counts)],
      ["Recall", merged(broadcast.recall_counts, base.recall_counts, recallCounts)],
      ["Edit", merged(broadcast.edit_counts, base.edit_counts, editCounts)],
    ].filter(([, m]) => m.size);
    clear(breakdown);
    if (!sections.length) {
      breakdown.append(h("p", { class: "empty", text: "No outcomes yet." }));
      return;
    }
    for (const [title, map] of sections) {
      const total = [...map.values()].reduce((a, b) => a + b, 0) || 1;
      breakdown.append(h("table", { class: "outcomes", dataset: { kind: title.toLowerCase() } },
        h("caption", { text: title }),
        h("tbody", {}, [...map.entries()].sort((a, b) => b[1] - a[1]).map(([k, v]) =>
          h("tr", { dataset: { outcome: k } }, h("th", { scope: "row", text: k }), h("td", { text: num(v) }),
            h("td", { class: "share", text: `${((100 * v) / total).toFixed(1)}%` }))))));
    }
  }

  // The buttons are made once and only enabled or disabled as the status moves: a button
  // rebuilt while events stream in could be replaced under the user's click.
  const buttons = new Map();
  function renderControls() {
    if (!may("broadcasts:control")) {
      if (!controls.childElementCount) {
        controls.append(h("p", { class: "hint", text: "This token may watch but not control broadcasts (no scope broadcasts:control)." }));
      }
      return;
    }
    if (!buttons.size) {
      for (const [move, spec] of Object.entries(MOVES)) {
        buttons.set(move, h("button", { type: "button", class: spec.danger ? "danger" : "", text: spec.label, onclick: () => act(move, spec) }));
      }
      buttons.set("edit", h("button", { type: "button", text: "Edit…", onclick: edit }));
      controls.append(...buttons.values());
    }
    for (const [move, spec] of Object.entries(MOVES)) buttons.get(move).disabled = !spec.when.includes(progress.status);
    const variants = (broadcast.variants || []).length > 0; // one new content cannot replace them
    const editButton = buttons.get("edit");
    editButton.disabled = variants || ["recalling", "recalled"].includes(progress.status);
    editButton.title = variants ? "A broadcast with variants cannot be edited: recall it and send again." : "";
  }

  async function act(move, spec) {
    const yes = await confirmDialog({ title: `${spec.label} broadcast #${id}?`, body: spec.body, confirm: spec.label, danger: spec.danger });
    if (!yes) return;
    try {
      const answer = await api(`/v1/broadcasts/${id}/${move}`, { method: "POST" });
      toast(`Broadcast #${id}: ${answer.status}`);
      apply(answer, true);
    } catch (failure) {
      toast(failure.explain ? failure.explain() : String(failure), "error");
      if (failure.status === 409) await reread(); // moved meanwhile (another tab, the API)
    }
  }

  /** The broadcast as the service has it now: its status, buttons and figures. */
  async function reread() {
    try {
      apply(await api(`/v1/broadcasts/${id}`));
    } catch {
      /* the toast said enough */
    }
  }

  async function edit() {
    const text = h("textarea", { name: "message", rows: "5" });
    text.value = broadcast.message || "";
    const mode = h("select", { name: "parse_mode" }, [["", "Plain text"], ["html", "HTML"], ["markdown_v2", "MarkdownV2"]].map(([v, t]) => h("option", { value: v, text: t })));
    mode.value = broadcast.parse_mode || "";
    const mediaUrl = h("input", { type: "text", name: "media_url", placeholder: "unchanged" });
    const summary = h("div", { class: "form-error", tabindex: "-1", hidden: true });
    const form = h("div", {}, field("New text or caption", text, { name: "message" }), field("Formatting", mode, { name: "parse_mode" }),
      broadcast.media_type !== "text" ? field("New media (URL or file_id)", mediaUrl, { name: "media_url" }) : null, summary);
    for (;;) {
      const yes = await confirmDialog({
        title: `Edit broadcast #${id}?`, confirm: "Edit every message",
        focus: form.querySelector('[aria-invalid="true"]'),
        body: "Every message already sent is edited in its chat, and recipients not sent yet get the new content.",
        extra: form,
      });
      if (!yes) return;
      const body = { message: text.value };
      if (mode.value) body.parse_mode = mode.value;
      if (mediaUrl.value.trim()) body.media_url = mediaUrl.value.trim();
      try {
        const answer = await api(`/v1/broadcasts/${id}/edit`, { method: "POST", body });
        toast(`Broadcast #${id} is being edited (version ${answer.content_version})`);
        clearErrors(form, summary);
        apply(answer);
        return;
      } catch (failure) {
        if (!failure.errors) { toast(failure.explain ? failure.explain() : String(failure), "error"); return; }
        showErrors(form, summary, failure); // and ask again, the errors at their fields
      }
    }
  }

  // The stream carries each move as an `event: status`, in order with the outcomes: every
  // outcome after it carries the new status. After our own move, the outcomes still on their
  // way from before it are not taken for its status until the stream's status (or end) event
  // of the move arrives; no timer.
  let awaitingMove = false;

  function apply(answer, moved = false) {
    if (moved && stream) awaitingMove = true;
    // A move's answer lists the broadcast without its reports (counts per outcome, variants'
    // figures, clicks): the page keeps those it read.
    const { outcome_counts, recall_counts, edit_counts, variants, link_clicks, clicks, clickers } = broadcast;
    broadcast = { ...broadcast, ...answer, outcome_counts, recall_counts, edit_counts, variants, link_clicks, clicks, clickers };
    progress = { ...progress, status: answer.status, total: answer.total, sent: answer.sent, failed: answer.failed, pending: answer.pending };
    renderStatic();
    render();
    if (!stream && (ACTIVE.has(answer.status) || answer.editing)) follow(true);
  }

  function renderStatic() {
    const b = broadcast;
    heading.textContent = `Broadcast #${id}`;
    message.textContent = b.message || (b.media_type === "album" ? "(an album)" : "(no text)");
    const rows = [
      ["Bot", b.bot], ["Kind", b.media_type], b.media_url ? ["Media", b.media_url] : null,
      ["Sent by", b.created_by || "–"], ["Created", when(b.created_at)],
      b.send_at ? ["Scheduled for", when(b.send_at)] : null,
      ["Started", when(b.started_at)], ["Finished", when(b.finished_at)],
      b.allow_paid_broadcast ? ["Paid broadcast", b.max_stars ? `budget ${b.max_stars} Stars` : "no budget"] : null,
      b.paid_stopped_at ? ["Paid sending stopped", when(b.paid_stopped_at)] : null,
      b.throttled_until ? ["Throttled until", when(b.throttled_until)] : null,
      b.content_version > 1 ? ["Content version", String(b.content_version)] : null,
      b.error ? ["Error", b.error] : null,
    ].filter(Boolean);
    meta.replaceChildren(...rows.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })]));
    const entries = [h("li", {}, h("strong", { text: b.created_by || "(unknown)" }), ` sent it · ${when(b.created_at)}`)];
    for (const action of b.actions || []) {
      entries.push(h("li", { dataset: { action: action.action } }, h("strong", { text: action.actor || "(unknown)" }), ` ${pastTense(action.action)} it · ${when(action.at)}`));
    }
    history.replaceChildren(...entries);
    variantsSection(variants, b);
  }

  function onEvents(batch) {
    for (const event of batch) {
      if (event.id && event.id !== "end") lastCursor = event.id;
      const data = event.data;
      // A stream from now opens with the outcomes its counters hold: the breakdowns' base.
      if (event.type === "status" && data.includes('"outcome_counts"')) {
        const { outcome_counts, recall_counts, edit_counts, content_version } = JSON.parse(data);
        // (A server of an earlier release opens with the delivery counts alone.)
        base = { outcome_counts, recall_counts: recall_counts ?? base.recall_counts, edit_counts: edit_counts ?? base.edit_counts };
        if (content_version) editVersion = content_version;
      }
      if (event.type === "result" || event.type === "recall" || event.type === "edit") {
        const at = Date.parse(member(data, "finished_at") || "");
        if (event.type === "result") {
          const outcome = member(data, "outcome");
          counts.set(outcome, (counts.get(outcome) || 0) + 1);
          chart.add(at);
        }
        const recall = member(data, "recall");
        if (recall) recallCounts.set(recall, (recallCounts.get(recall) || 0) + 1);
        const edited = member(data, "edit");
        if (edited) countEdit(edited, Number(/"content_version":(\d+)/.exec(data)?.[1] || 1));
        feed.push(data);
        if (feed.length > FEED * 4) feed.splice(0, feed.length - FEED);
        feedDirty = true;
      }
    }
    const last = batch.findLast((e) => ["result", "recall", "edit", "end", "status"].includes(e.type));
    if (last) {
      const parsed = JSON.parse(last.data);
      const moves = batch.some((e) => e.type === "status" || e.type === "end");
      if (moves) awaitingMove = false;
      const status = awaitingMove ? progress.status : parsed.progress.status;
      progress = { ...parsed.progress, status };
      if (last.type !== "status") meter.add(Date.parse(parsed.finished_at || "") || NaN, doneOf(progress));
      if (last.type === "end") ended();
    }
    schedule();
  }

  /** An edit outcome of `version`: a newer edit's outcomes start the breakdown afresh (the
   * service counts the latest edit's alone); an older edit's, recorded late, are left out. */
  function countEdit(outcome, version) {
    if (version > editVersion) {
      editVersion = version;
      editCounts.clear();
      base.edit_counts = {};
      broadcast = { ...broadcast, edit_counts: {} };
    }
    if (version === editVersion) editCounts.set(outcome, (editCounts.get(outcome) || 0) + 1);
  }

  function schedule() {
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      render();
      if (feedDirty) renderFeed();
    });
  }

  function renderFeed() {
    feedDirty = false;
    if (feed.length > FEED) feed.splice(0, feed.length - FEED);
    const rows = feed.slice().reverse().map((data) => {
      const r = JSON.parse(data);
      const base = r.variant ? `${r.outcome} · ${r.variant}` : r.outcome;
      const outcome = r.edit ? `${base} · edit ${r.edit}` : r.recall ? `${base} · recall ${r.recall}` : base;
      return h("tr", { class: `outcome-${r.outcome}` },
        h("td", { "data-label": "User", text: String(r.user_id) }),
        h("td", { "data-label": "Outcome", text: outcome }),
        h("td", { "data-label": "Message", text: (r.message_ids || []).join(" ") || "–" }),
        h("td", { "data-label": "At", text: r.finished_at ? new Date(r.finished_at).toLocaleTimeString() : "–" }),
        h("td", { "data-label": "Error", text: r.recall_error || r.edit_error || r.error || "" }));
    });
    feedBody.replaceChildren(...rows);
  }

  async function ended() {
    stream?.stop();
    stream = null;
    liveState.textContent = "finished";
    liveState.dataset.state = "ended";
    try {
      const answer = await api(`/v1/broadcasts/${id}`);
      broadcast = answer;
      // Once the service has it final, its counts are the truth: the stream's were only the
      // way there.
      if (!ACTIVE.has(answer.status) && !answer.editing) {
        for (const live of [counts, recallCounts, editCounts]) live.clear();
        base = {};
      }
      progress = { ...progress, status: answer.status };
      renderStatic();
      render();
    } catch {
      /* the figures already shown stay */
    }
  }

  /** `fromNow`: nothing is replayed (a broadcast being sent: its counts are the page's). */
  function follow(fromNow = false) {
    editVersion = broadcast.content_version || 1;
    if (fromNow) base = { outcome_counts: broadcast.outcome_counts, recall_counts: broadcast.recall_counts, edit_counts: broadcast.edit_counts };
    stream = new EventStream(`/v1/broadcasts/${id}/events${fromNow ? "?from=now" : ""}`, {
      onEvents,
      onIdle() { meter.idle(); schedule(); },
      onState(state, detail) {
        const words = { connecting: "connecting…", live: "● live", reconnecting: "reconnecting…", ended: "finished", failed: "stream stopped" };
        liveState.textContent = words[state] || state;
        liveState.dataset.state = state;
        if (state === "failed" && detail) toast(detail.explain(), "error");
      },
    });
    stream.lastEventId = lastCursor;
    if (!stream.start()) {
      liveState.textContent = "not live: too many open streams";
      stream = null;
    }
  }

  csvButton.addEventListener("click", async () => {
    csvButton.disabled = true;
    try {
      const size = await download(`/v1/broadcasts/${id}/deliveries.csv`, { outcome: csvOutcome.value }, `broadcast-${id}${csvOutcome.value ? `-${csvOutcome.value}` : ""}.csv`);
      toast(`CSV exported (${num(size)} bytes)`);
    } catch (failure) {
      toast(failure.explain ? failure.explain() : String(failure), "error");
    } finally {
      csvButton.disabled = false;
    }
  });

  (async () => {
    try {
      broadcast = await api(`/v1/broadcasts/${id}`);
    } catch (failure) {
      error.hidden = false;
      error.textContent = failure.status === 404 ? `Broadcast #${id} does not exist, or this token may not see it.` : failure.explain();
      return;
    }
    progress = { status: broadcast.status, total: broadcast.total, sent: broadcast.sent, failed: broadcast.failed, pending: broadcast.pending };
    renderStatic();
    render();
    renderFeed();
    const live = ACTIVE.has(broadcast.status) || broadcast.editing;
    // Replayed while that is cheap (the feed and the chart from the first outcome); a broadcast
    // further along is followed from now, its counts from the broadcast.
    if (live || broadcast.total <= REPLAY_LIMIT) follow(live && broadcast.sent + broadcast.failed > REPLAY_LIMIT);
    else {
      liveState.textContent = "finished";
      chartNote.textContent = `The chart and the latest outcomes are shown for broadcasts being sent, or finished ones of up to ${num(REPLAY_LIMIT)} recipients; export the CSV for the rest.`;
    }
    feedNote.textContent = `The newest ${FEED} outcomes, newest first.`;
  })();

  return () => { stream?.stop(); stream = null; if (frame) cancelAnimationFrame(frame); };
}

function pastTense(action) {
  return { pause: "paused", resume: "resumed", cancel: "cancelled", recall: "recalled", edit: "edited" }[action] || action;
}
