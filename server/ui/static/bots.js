// Bots (scope bots:admin): the bots this token may use, adding one with its Telegram token
// (sent once, never shown again: the service keeps it encrypted) and deleting one.

import { api, loadGrants } from "./api.js";
import { clearErrors, confirmDialog, field, h, showErrors, toast, when } from "./dom.js";

export function botsPage(main) {
  const list = h("div", { class: "list" });
  const name = h("input", { type: "text", name: "name", autocomplete: "off", pattern: "[a-z0-9_-]{1,32}" });
  const secret = h("input", { type: "password", name: "token", autocomplete: "off" });
  const rateLimit = h("input", { type: "number", name: "rate_limit", min: "0", step: "any" });
  const paidRate = h("input", { type: "number", name: "paid_rate_limit", min: "0", step: "any" });
  const apiUrl = h("input", { type: "text", name: "api_url", inputmode: "url" });
  const summary = h("div", { class: "form-error", tabindex: "-1", role: "alert", hidden: true });
  const form = h("form", { class: "card", novalidate: true, "aria-labelledby": "add-bot" },
    h("h2", { id: "add-bot", text: "Add a bot" }), summary,
    field("Name", name, { name: "name", hint: "Lower-case letters, digits, _ and -; up to 32." }),
    field("Bot token (from @BotFather)", secret, { name: "token", hint: "Checked with Telegram, stored encrypted, never shown again." }),
    field("Rate limit", rateLimit, { name: "rate_limit", hint: "Messages per second; empty: the service's telegram.rate_limit." }),
    field("Paid rate limit", paidRate, { name: "paid_rate_limit", hint: "Messages per second of its paid broadcasts; empty: the service's." }),
    field("Bot API URL", apiUrl, { name: "api_url", hint: "Empty: the service's telegram.api_url." }),
    h("button", { type: "submit", class: "primary", text: "Add bot" }));

  main.append(h("div", { class: "page-head" }, h("h1", { text: "Bots" })), list, form);

  async function load() {
    try {
      const answer = await api("/v1/bots");
      list.replaceChildren(h("table", { class: "bots" },
        h("caption", { class: "visually-hidden", text: "Bots" }),
        h("thead", {}, h("tr", {}, ["Name", "Telegram", "Rate", "Paid rate", "Source", "Added", ""].map((t) => h("th", { scope: "col", text: t })))),
        h("tbody", {}, answer.bots.map((bot) => h("tr", { dataset: { bot: bot.name } },
          h("th", { scope: "row", "data-label": "Name", text: bot.name }),
          h("td", { "data-label": "Telegram", text: bot.username ? `@${bot.username} (${bot.bot_id})` : String(bot.bot_id || "–") }),
          h("td", { "data-label": "Rate", text: `${bot.rate_limit}/s` }),
          h("td", { "data-label": "Paid rate", text: `${bot.paid_rate_limit}/s` }),
          h("td", { "data-label": "Source", text: bot.source }),
          h("td", { "data-label": "Added", text: when(bot.created_at) }),
          h("td", { class: "row-actions" }, bot.source === "api"
            ? h("button", { type: "button", class: "link danger", text: "Delete", "aria-label": `Delete bot ${bot.name}`, onclick: () => remove(bot) })
            : h("span", { class: "hint", text: "configured" })))))));
    } catch (failure) {
      list.replaceChildren(h("p", { class: "form-error", role: "alert", text: failure.explain ? failure.explain() : String(failure) }));
    }
  }

  async function remove(bot) {
    const yes = await confirmDialog({ title: `Delete bot ${bot.name}?`, body: "Its broadcasts and users stay readable; its token is wiped. Refused while it has unfinished broadcasts.", confirm: "Delete", danger: true });
    if (!yes) return;
    try {
      await api(`/v1/bots/${encodeURIComponent(bot.name)}`, { method: "DELETE" });
      toast(`Bot ${bot.name} deleted`);
      await refreshBots();
      load();
    } catch (failure) {
      toast(failure.explain ? failure.explain() : String(failure), "error");
    }
  }

  /** The token's bots again (GET /v1/token): Compose, the lists' bot filters and Users offer
   * the new bot (or no longer the deleted one) without a reload. */
  async function refreshBots() {
    try {
      await loadGrants();
    } catch {
      /* kept as they were: the next page load reads them */
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form, summary);
    const body = { name: name.value.trim(), token: secret.value.trim() };
    if (rateLimit.value) body.rate_limit = Number(rateLimit.value);
    if (paidRate.value) body.paid_rate_limit = Number(paidRate.value);
    if (apiUrl.value.trim()) body.api_url = apiUrl.value.trim();
    try {
      const bot = await api("/v1/bots", { method: "POST", body });
      secret.value = "";
      toast(`Bot ${bot.name} added`);
      form.reset();
      await refreshBots();
      load();
    } catch (failure) {
      showErrors(form, summary, failure.errors?.length ? failure : { title: "Refused:", errors: [{ field: "", message: failure.explain ? failure.explain() : String(failure) }] });
    }
  });
  load();
}
