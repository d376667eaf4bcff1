// The preview "as Telegram would show it": the text the service rendered for one user
// (POST /v1/preview), formatted by its parse mode with only Telegram's own tags, in a message
// bubble with its media placeholder and keyboard. HTML is parsed inertly (DOMParser runs no
// script) and rebuilt from an allow-list of Telegram's tags; no markup of the text is ever
// inserted into the page as it is.

import { h } from "./dom.js";

const TAGS = {
  b: "strong", strong: "strong", i: "em", em: "em", u: "u", ins: "u", s: "s", strike: "s", del: "s",
  code: "code", pre: "pre", blockquote: "blockquote", "tg-spoiler": "span", a: "a",
};

function fromHtml(text) {
  const doc = new DOMParser().parseFromString(`<body>${text}</body>`, "text/html");
  const out = document.createDocumentFragment();
  const walk = (node, into) => {
    for (const child of node.childNodes) {
      if (child.nodeType === Node.TEXT_NODE) into.append(child.textContent);
      else if (child.nodeType === Node.ELEMENT_NODE) {
        const tag = child.tagName.toLowerCase();
        const spoiler = tag === "span" && child.classList.contains("tg-spoiler");
        const name = spoiler ? "span" : TAGS[tag];
        if (!name) { walk(child, into); continue; }
        const el = document.createElement(name);
        if (spoiler || tag === "tg-spoiler") el.className = "spoiler";
        if (name === "a") {
          const href = child.getAttribute("href") || "";
          if (/^(https?:|tg:)/i.test(href)) el.href = href;
          el.rel = "noopener noreferrer";
          el.target = "_blank";
        }
        walk(child, el);
        into.append(el);
      }
    }
  };
  walk(doc.body, out);
  return out;
}

// MarkdownV2: *bold* _italic_ __underline__ ~strike~ ||spoiler|| `code` ```pre``` [text](url)
function fromMarkdown(text) {
  const out = document.createDocumentFragment();
  const stack = [{ el: out, mark: "" }];
  const top = () => stack[stack.length - 1].el;
  const marks = [["```", "pre"], ["__", "u"], ["||", "span"], ["*", "strong"], ["_", "em"], ["~", "s"], ["`", "code"]];
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\" && i + 1 < text.length) { top().append(text[i + 1]); i += 2; continue; }
    const link = c === "[" ? text.slice(i).match(/^\[([^\]]*)\]\(([^)]*)\)/) : null;
    if (link) {
      const a = h("a", { rel: "noopener noreferrer", target: "_blank", text: link[1].replace(/\\(.)/g, "$1") });
      if (/^(https?:|tg:)/i.test(link[2])) a.href = link[2];
      top().append(a);
      i += link[0].length;
      continue;
    }
    const found = marks.find(([m]) => text.startsWith(m, i));
    if (found) {
      const [mark, tag] = found;
      if (stack[stack.length - 1].mark === mark) stack.pop();
      else {
        const el = document.createElement(tag);
        if (mark === "||") el.className = "spoiler";
        top().append(el);
        stack.push({ el, mark });
      }
      i += mark.length;
      continue;
    }
    top().append(c);
    i += 1;
  }
  return out;
}

export function formatted(text, parseMode) {
  if (parseMode === "html") return fromHtml(text);
  if (parseMode === "markdown_v2") return fromMarkdown(text);
  return document.createTextNode(text);
}

/** A Telegram-like message bubble. */
export function bubble({ text, parseMode, mediaType, mediaLabel, albumCaptions = [], buttons = [], botName = "" }) {
  const parts = [];
  if (botName) parts.push(h("p", { class: "tg-name", text: botName }));
  if (mediaType === "album") {
    parts.push(h("div", { class: "tg-album" }, albumCaptions.map((caption, i) =>
      h("figure", { class: "tg-media" }, h("span", { class: "tg-kind", text: `item ${i + 1}` }),
        caption ? h("figcaption", {}, formatted(caption, parseMode)) : null))));
  } else if (mediaType && mediaType !== "text") {
    parts.push(h("div", { class: `tg-media tg-${mediaType}` }, h("span", { class: "tg-kind", text: mediaType.replace("_", " ") }),
      mediaLabel ? h("span", { class: "tg-file", text: mediaLabel }) : null));
  }
  if (text) parts.push(h("div", { class: "tg-text" }, formatted(text, parseMode)));
  const time = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  parts.push(h("span", { class: "tg-time", text: time }));
  const rows = buttons.map((row) => h("div", { class: "tg-row" }, row.map((b) => h("span", { class: "tg-button", text: b.text }))));
  return h("div", { class: "tg-chat", role: "figure", "aria-label": `Preview: ${text || mediaType}` },
    h("div", { class: "tg-bubble" }, parts), rows.length ? h("div", { class: "tg-keyboard" }, rows) : null);
}
