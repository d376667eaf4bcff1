// Small DOM and formatting helpers shared by the pages. No framework: elements are built
// with h() and text is always set as text (never parsed as HTML).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

let ids = 0;
export function uid(prefix = "f") {
  ids += 1;
  return `${prefix}-${ids}`;
}

/** A labelled form field: label, control, hint and an error slot tied to the control. */
export function field(label, control, { hint = "", name = "" } = {}) {
  const id = control.id || uid("field");
  control.id = id;
  if (name) control.dataset.field = name;
  const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
  const described = [];
  let hintEl = null;
  if (hint) {
    hintEl = h("p", { class: "hint", id: `${id}-hint`, text: hint });
    described.push(hintEl.id);
  }
  described.push(error.id);
  control.setAttribute("aria-describedby", described.join(" "));
  return h("div", { class: "field" }, h("label", { for: id, text: label }), control, hintEl, error);
}

const numbers = new Intl.NumberFormat(undefined);
export const num = (value) => (value === null || value === undefined ? "–" : numbers.format(value));

export function rate(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  return `${value >= 10 ? Math.round(value) : value.toFixed(1)}/s`;
}

export function duration(seconds) {
  if (seconds === null || !Number.isFinite(seconds) || seconds < 0) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  const hours = Math.floor(s / 3600);
  return `${hours} h ${Math.floor((s % 3600) / 60)} min`;
}

export function when(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

/** Tells screen readers (and sighted users, briefly) what just happened. */
export function toast(message, kind = "info") {
  const box = document.getElementById("toast");
  if (!box) return;
  const item = h("p", { class: `toast toast-${kind}`, text: message });
  box.append(item);
  setTimeout(() => item.remove(), 6000);
}

/** Asks before doing something: a modal <dialog>; resolves true when confirmed. */
export function confirmDialog({ title, body, confirm = "Confirm", danger = false, extra = null, focus = null }) {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "dialog", "aria-labelledby": "dialog-title" });
    const form = h("form", { method: "dialog" });
    const ok = h("button", { type: "submit", value: "ok", class: danger ? "danger" : "primary", text: confirm });
    const cancel = h("button", { type: "submit", value: "cancel", text: "Back" });
    append(form, [
      h("h2", { id: "dialog-title", text: title }),
      h("p", { text: body }),
      extra,
      h("div", { class: "actions" }, cancel, ok),
    ]);
    dialog.append(form);
    document.body.append(dialog);
    dialog.addEventListener("close", () => {
      const yes = dialog.returnValue === "ok";
      dialog.remove();
      resolve(yes);
    });
    dialog.showModal();
    (focus || cancel).focus();
  });
}

/** Shows problem+json field violations at their fields inside `root`; the rest in `summary`. */
export function showErrors(root, summary, error) {
  clearErrors(root, summary);
  const violations = (error && error.errors) || [];
  const unplaced = [];
  let first = null;
  for (const violation of violations) {
    const control = fieldFor(root, violation.field);
    if (!control) {
      unplaced.push(violation);
      continue;
    }
    const slot = root.querySelector(`#${CSS.escape(`${control.id}-error`)}`); // root may be detached
    control.setAttribute("aria-invalid", "true");
    if (slot) {
      slot.hidden = false;
      slot.textContent = slot.textContent
        ? `${slot.textContent}; ${describe(violation)}`
        : describe(violation);
    }
    first = first || control;
  }
  if (summary) {
    const items = (violations.length ? violations : [{ field: "", message: error.detail }]).map(
      (v) => h("li", { text: describe(v) }),
    );
    summary.append(h("p", { text: error.title || "The request was refused:" }), h("ul", {}, items));
    summary.hidden = false;
  }
  (first || summary)?.focus();
  return unplaced;
}

function describe(violation) {
  return violation.field ? `${violation.field}: ${violation.message}` : violation.message;
}

export function clearErrors(root, summary) {
  for (const control of root.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
  for (const slot of root.querySelectorAll(".field-error")) {
    slot.hidden = true;
    slot.textContent = "";
  }
  if (summary) {
    summary.hidden = true;
    clear(summary);
  }
}

/** The control named `field` (data-field), else the one of its longest named prefix. */
function fieldFor(root, name) {
  let candidate = name;
  while (candidate) {
    const found = root.querySelector(`[data-field="${CSS.escape(candidate)}"]`);
    if (found) return found;
    const cut = Math.max(candidate.lastIndexOf("."), candidate.lastIndexOf("["));
    candidate = cut > 0 ? candidate.slice(0, cut) : "";
  }
  return null;
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}`, text: status });
}

/** A progress bar: sent and failed shares of total, with an accessible value. */
export function progressBar({ total, sent, failed }) {
  const done = sent + failed;
  const pct = (n) => (total ? (100 * n) / total : 0);
  const bar = h("div", {
    class: "progress",
    role: "progressbar",
    "aria-valuemin": "0",
    "aria-valuemax": String(total || 0),
    "aria-valuenow": String(done),
    "aria-label": `${num(done)} of ${num(total)} done`,
  });
  const sentPart = h("span", { class: "progress-sent" });
  const failedPart = h("span", { class: "progress-failed" });
  sentPart.style.width = `${pct(sent)}%`;
  failedPart.style.width = `${pct(failed)}%`;
  bar.append(sentPart, failedPart);
  return bar;
}

export function updateProgressBar(bar, { total, sent, failed }) {
  const done = sent + failed;
  bar.setAttribute("aria-valuemax", String(total || 0));
  bar.setAttribute("aria-valuenow", String(done));
  bar.setAttribute("aria-label", `${num(done)} of ${num(total)} done`);
  const [sentPart, failedPart] = bar.children;
  sentPart.style.width = `${total ? (100 * sent) / total : 0}%`;
  failedPart.style.width = `${total ? (100 * failed) / total : 0}%`;
}
