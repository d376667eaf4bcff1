// Per-variant figures and clicks (A/B variants and click tracking), rendered from whatever the
// broadcast's JSON carries: a `variants` array of objects, and/or `variant_counts` /
// `click_counts` / `clicks` objects. Nothing is shown when the API reports none. This is the
// one place to adjust when those fields settle.

import { clear, h, num } from "./dom.js";

const KEYS = ["variants", "variant_counts", "clicks", "click_counts"];

export function variantsSection(root, broadcast) {
  clear(root);
  const present = KEYS.filter((key) => hasData(broadcast[key]));
  if (!present.length) return;
  const section = h("section", { class: "card", "aria-labelledby": "variants-title" },
    h("h2", { id: "variants-title", text: "Variants and clicks" }));
  for (const key of present) section.append(tableOf(key, broadcast[key]));
  root.append(section);
}

function hasData(value) {
  if (Array.isArray(value)) return value.length > 0;
  return value !== null && typeof value === "object" && Object.keys(value).length > 0;
}

function cell(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return num(value);
  if (typeof value === "object") {
    return Object.entries(value).map(([k, v]) => `${k}: ${typeof v === "number" ? num(v) : JSON.stringify(v)}`).join(", ");
  }
  return String(value);
}

function tableOf(key, value) {
  const rows = Array.isArray(value)
    ? value.map((item, i) => (item && typeof item === "object" ? item : { variant: i, value: item }))
    : Object.entries(value).map(([name, item]) => (item && typeof item === "object" ? { name, ...item } : { name, count: item }));
  const columns = [...new Set(rows.flatMap((row) => Object.keys(row)))];
  return h("table", { class: "outcomes", dataset: { variants: key } },
    h("caption", { text: key.replace(/_/g, " ") }),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", text: c.replace(/_/g, " ") })))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) => h("td", { text: cell(row[c]) }))))));
}
