// Users: each bot's own. Look one up by id, list them by tag and language (active only or
// all, the blocked ones showing why), change a user's tags, and import a CSV file with its
// upload progress.

import { ApiError, api, botNames, may, upload } from "./api.js";
import { clear, confirmDialog, field, h, num, toast, when } from "./dom.js";

const PAGE_SIZE = 25;

export function usersPage(main) {
  const bots = botNames();
  const state = { tokens: [""], index: 0 };
  const bot = h("select", { name: "bot" }, bots.map((b) => h("option", { value: b, text: b })));
  const search = h("input", { type: "search", name: "user_id", inputmode: "numeric", placeholder: "e.g. 111" });
  const tag = h("input", { type: "text", name: "tag", placeholder: "vip" });
  const language = h("input", { type: "text", name: "language_code", placeholder: "en" });
  const activeOnly = h("input", { type: "checkbox", name: "active_only" });
  const body = h("div", { class: "list" });
  const status = h("p", { class: "hint", role: "status" });
  const prev = h("button", { type: "button", text: "← Previous", disabled: true });
  const next = h("button", { type: "button", text: "Next →", disabled: true });

  const importFile = h("input", { type: "file", name: "csv", accept: ".csv,text/csv" });
  const importProgress = h("progress", { max: "100", value: "0", hidden: true, "aria-label": "Upload progress" });
  const importStatus = h("p", { role: "status", class: "hint" });
  const importButton = h("button", { type: "submit", text: "Import" });

  const botParam = () => (bots.length > 1 ? bot.value : undefined);

  main.append(
    h("div", { class: "page-head" }, h("h1", { text: "Users" })),
    h("form", { class: "filters", "aria-label": "Find users", onsubmit: (e) => { e.preventDefault(); state.tokens = [""]; state.index = 0; load(); } },
      bots.length > 1 ? field("Bot", bot) : null,
      field("User id", search), field("Tag", tag), field("Language", language),
      h("label", { class: "check" }, activeOnly, " Active only (not blocked)"),
      h("div", { class: "field" }, h("span", { class: "label-spacer", "aria-hidden": "true", text: " " }), h("button", { type: "submit", class: "primary", text: "Search" }))),
    status, body,
    h("nav", { class: "pager", "aria-label": "Pages" }, prev, next),
    may("users:write")
      ? h("form", { class: "card", "aria-labelledby": "import-title", onsubmit: importCsv },
        h("h2", { id: "import-title", text: "Import users from CSV" }),
        h("p", { class: "hint", text: "The first line names the columns: id (required), username, first_name, last_name, language_code, tags (separated by spaces). Imported in chunks of 10,000: a bad line stops the import, and the chunks before it stay imported." }),
        field("CSV file", importFile), importButton, importProgress, importStatus)
      : null,
  );

  async function load() {
    clear(body);
    status.textContent = "Loading…";
    try {
      const id = search.value.trim();
      if (id) {
        const user = await api(`/v1/users/${encodeURIComponent(id)}`, { params: { bot: botParam() } });
        render([user]);
        status.textContent = `User ${id}`;
        prev.disabled = next.disabled = true;
        return;
      }
      const answer = await api("/v1/users", {
        params: {
          bot: botParam(), tag: tag.value.trim(), language_code: language.value.trim(),
          active_only: activeOnly.checked ? "true" : "", page_size: PAGE_SIZE, page_token: state.tokens[state.index],
        },
      });
      render(answer.users);
      state.tokens[state.index + 1] = answer.next_page_token;
      prev.disabled = state.index === 0;
      next.disabled = !answer.next_page_token;
      status.textContent = `${answer.users.length} users on page ${state.index + 1}`;
    } catch (failure) {
      status.textContent = failure instanceof ApiError ? (failure.status === 404 ? "No such user." : failure.explain()) : String(failure);
    }
  }

  function render(users) {
    if (!users.length) {
      body.replaceChildren(h("p", { class: "empty", text: "No users match." }));
      return;
    }
    body.replaceChildren(h("table", { class: "users" },
      h("caption", { class: "visually-hidden", text: "Users" }),
      h("thead", {}, h("tr", {}, ["Id", "Name", "Language", "Tags", "State", ""].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, users.map(row))));
  }

  function row(user) {
    const name = [user.first_name, user.last_name].filter(Boolean).join(" ") + (user.username ? ` @${user.username}` : "");
    const tagsCell = h("td", { "data-label": "Tags" }, user.tags.map((t) => h("span", { class: "tag", text: t })));
    const state = user.active
      ? h("span", { class: "badge status-completed", text: "active" })
      : h("span", { class: "badge status-failed", text: user.blocked_reason && user.blocked_reason !== "blocked" ? `blocked: ${user.blocked_reason}` : "blocked", title: when(user.blocked_at) });
    const actions = h("td", { class: "row-actions" });
    if (may("users:write")) {
      actions.append(
        h("button", { type: "button", class: "link", text: "Tags…", "aria-label": `Edit the tags of user ${user.id}`, onclick: () => editTags(user) }),
        h("button", { type: "button", class: "link danger", text: "Delete", "aria-label": `Delete user ${user.id}`, onclick: () => remove(user) }));
    }
    return h("tr", { dataset: { user: String(user.id) } },
      h("th", { scope: "row", "data-label": "Id", text: String(user.id) }),
      h("td", { "data-label": "Name", text: name || "–" }),
      h("td", { "data-label": "Language", text: user.language_code || "–" }),
      tagsCell, h("td", { "data-label": "State" }, state), actions);
  }

  async function editTags(user) {
    const input = h("input", { type: "text", value: user.tags.join(" ") });
    const yes = await confirmDialog({ title: `Tags of user ${user.id}`, body: "Separated by spaces; they replace the user's tags.", confirm: "Save", extra: field("Tags", input) });
    if (!yes) return;
    const { id, username, first_name, last_name, language_code } = user;
    const entry = { id, username, first_name, last_name, language_code, tags: input.value.split(/[\s,]+/).filter(Boolean) };
    try {
      await api("/v1/users", { method: "POST", body: { users: [entry], ...(botParam() ? { bot: botParam() } : {}) } });
      toast(`Tags of user ${user.id} saved`);
      load();
    } catch (failure) {
      toast(failure.explain ? failure.explain() : String(failure), "error");
    }
  }

  async function remove(user) {
    const yes = await confirmDialog({ title: `Delete user ${user.id}?`, body: "The service forgets the user and its tags (its deliveries stay in the reports).", confirm: "Delete", danger: true });
    if (!yes) return;
    try {
      await api(`/v1/users/${user.id}`, { method: "DELETE", params: { bot: botParam() } });
      toast(`User ${user.id} deleted`);
      load();
    } catch (failure) {
      toast(failure.explain ? failure.explain() : String(failure), "error");
    }
  }

  async function importCsv(event) {
    event.preventDefault();
    const file = importFile.files[0];
    if (!file) {
      importStatus.textContent = "Choose a CSV file first.";
      importFile.focus();
      return;
    }
    importButton.disabled = true;
    importProgress.hidden = false;
    importProgress.value = 0;
    importStatus.textContent = `Uploading ${file.name}…`;
    try {
      const answer = await upload("/v1/users/import", { bot: botParam() }, file, "text/csv", (sent, total) => {
        importProgress.value = Math.round((100 * sent) / total);
        importStatus.textContent = sent < total ? `Uploading: ${num(sent)} of ${num(total)} bytes` : "Uploaded; importing…";
      });
      importProgress.value = 100;
      importStatus.textContent = `Imported ${num(answer.imported)} users.`;
      load();
    } catch (failure) {
      const imported = failure.problem?.imported;
      const said = failure.explain ? failure.explain() : String(failure);
      // (The service's detail may say how many went in already: not said twice.)
      const count = imported !== undefined && !said.includes("imported") ? ` (${num(imported)} imported before it)` : "";
      importStatus.textContent = `Import stopped: ${said}${count}`;
    } finally {
      importButton.disabled = false;
    }
  }

  prev.addEventListener("click", () => { state.index = Math.max(0, state.index - 1); load(); });
  next.addEventListener("click", () => { state.index += 1; load(); });
  load();
}
