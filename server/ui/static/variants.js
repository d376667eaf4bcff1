// Per-variant figures and clicks (A/B variants and click tracking), rendered from whatever the
// broadcast's JSON carries: a `variants` array (each variant's name, weight, languages, sent,
// failed, outcome counts, clicks...), `clicks` and `clickers` totals when `track_clicks` is
// on, and `link_clicks` (clicks per variant and link). Any other object or array field named
// `variant_counts` or `click_counts` is shown as a table too. Nothing is shown when the API
// reports none of them: the one place to adjust as those fields evolve.

import { clear, h, num } from "./dom.js";

const FIRST = ["name", "weight", "language_codes", "sent", "failed", "clicks"];
const HIDDEN = new Set(["media_url", "media_type", "entities", "reply_markup", "album", "source"]);
const TABLES = ["variants", "link_clicks", "variant_counts", "click_counts"];

export function variantsSection(root, broadcast) {
  clear(root);
  const tables = TABLES.filter((key) => hasData(broadcast[key]));
  const totals = broadcast.track_clicks || typeof broadcast.clicks === "number" && broadcast.clicks > 0;
  if (!tables.length && !totals) return;
  const section = h("section", { class: "card", "aria-labelledby": "variants-title" },
    h("h2", { id: "variants-title", text: !hasData(broadcast.variants) ? "Clicks" : totals ? "Variants and clicks" : "Variants" }));
  if (totals) {
    section.append(h("p", { class: "clicks", dataset: { clicks: String(broadcast.clicks ?? 0) } },
      h("strong", { text: num(broadcast.clicks ?? 0) }), " clicks",
      typeof broadcast.clickers === "number" ? ` by ${num(broadcast.clickers)} recipients` : "",
      broadcast.sent ? ` (${((100 * (broadcast.clickers ?? broadcast.clicks ?? 0)) / broadcast.sent).toFixed(1)}% of those sent)` : ""));
  }
  const hidden = broadcast.track_clicks === false ? new Set([...HIDDEN, "clicks"]) : HIDDEN;
  for (const key of tables) section.append(h("div", { class: "scroll" }, tableOf(key, broadcast[key], hidden)));
  root.append(section);
}

function hasData(value) {
  if (Array.isArray(value)) return value.length > 0;
  return value !== null && typeof value === "object" && Object.keys(value).length > 0;
}

function cell(key, value) {
  if (value === null || value === undefined || value === "") return "–";
  if (typeof value === "number") return num(value);
  if (Array.isArray(value)) return value.length ? value.join(", ") : "–";
  if (typeof value === "object") {
    return Object.entries(value).map(([k, v]) => `${k} ${typeof v === "number" ? num(v) : JSON.stringify(v)}`).join(", ") || "–";
  }
  const text = String(value);
  return key === "message" && text.length > 60 ? `${text.slice(0, 59)}…` : text;
}

function tableOf(key, value, hidden) {
  const rows = Array.isArray(value)
    ? value.map((item, i) => (item && typeof item === "object" ? item : { variant: i, value: item }))
    : Object.entries(value).map(([name, item]) => (item && typeof item === "object" ? { name, ...item } : { name, count: item }));
  const seen = [...new Set(rows.flatMap((row) => Object.keys(row)))].filter((c) => !hidden.has(c));
  const columns = [...FIRST.filter((c) => seen.includes(c)), ...seen.filter((c) => !FIRST.includes(c))];
  return h("table", { class: "outcomes variants-table", dataset: { variants: key } },
    h("caption", { text: key === "variants" ? "Per variant" : key.replace(/_/g, " ") }),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", text: c.replace(/_/g, " ") })))),
    h("tbody", {}, rows.map((row) => h("tr", { dataset: row.name !== undefined ? { variant: String(row.name) } : {} },
      columns.map((c) => h("td", { text: cell(c, row[c]) }))))));
}
