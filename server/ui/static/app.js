// The dashboard's shell: sign-in, navigation between the pages (the URL's #fragment names
// the page, never the token), and what the token may see.

import { ApiError, forgetToken, loadGrants, may, onUnauthorized, setToken, token, grants } from "./api.js";
import { clear, field, h, toast } from "./dom.js";
import { broadcastsPage } from "./broadcasts.js";
import { broadcastPage } from "./broadcast.js";
import { composePage } from "./compose.js";
import { usersPage } from "./users.js";
import { botsPage } from "./bots.js";

const main = document.getElementById("main");
let cleanup = () => {};

const PAGES = [
  { pattern: /^#\/broadcasts\/(\d+)$/, page: "broadcasts", scope: "broadcasts:read", render: broadcastPage, title: "Broadcast" },
  { pattern: /^#\/broadcasts$/, page: "broadcasts", scope: "broadcasts:read", render: broadcastsPage, title: "Broadcasts" },
  { pattern: /^#\/compose$/, page: "compose", scope: "broadcasts:send", render: composePage, title: "Compose" },
  { pattern: /^#\/users$/, page: "users", scope: "users:read", render: usersPage, title: "Users" },
  { pattern: /^#\/bots$/, page: "bots", scope: "bots:admin", render: botsPage, title: "Bots" },
];

function signInPage(message = "") {
  document.getElementById("nav").hidden = true;
  document.getElementById("who").hidden = true;
  document.title = "Sign in · Telegram Broadcast Service";
  const input = h("input", {
    type: "password",
    name: "token",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    minlength: "1",
  });
  const error = h("p", { class: "form-error", role: "alert", hidden: !message, text: message });
  const form = h(
    "form",
    { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title", text: "Sign in" }),
    h("p", {
      class: "hint",
      text: "Paste an API token of this service. It is kept in this browser tab only (session storage) and sent as the Authorization header; closing the tab forgets it.",
    }),
    field("API token", input),
    error,
    h("button", { type: "submit", class: "primary", text: "Sign in" }),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    input.value = "";
    try {
      await loadGrants();
    } catch (failure) {
      forgetToken();
      error.hidden = false;
      error.textContent =
        failure instanceof ApiError && failure.status === 401
          ? "This token is not accepted by the service."
          : failure instanceof ApiError
            ? failure.explain()
            : String(failure);
      input.focus();
      return;
    }
    signedIn();
    if (!location.hash.startsWith("#/")) location.hash = "#/broadcasts";
    else route();
  });
  cleanup();
  cleanup = () => {};
  clear(main).append(form);
  input.focus();
}

function signedIn() {
  const nav = document.getElementById("nav");
  nav.hidden = false;
  for (const link of nav.querySelectorAll("a[data-scope]")) {
    link.parentElement.hidden = !may(link.dataset.scope);
  }
  document.getElementById("who").hidden = false;
  document.getElementById("token-name").textContent = `Token: ${grants.name || "(unnamed)"}`;
}

function forbidden(scope, title) {
  return h(
    "section",
    { class: "card notice", role: "alert" },
    h("h1", { text: title }),
    h("p", {
      text: `The API token “${grants.name}” lacks the scope ${scope}, so this page is not available. Sign in with a token that has it, or ask whoever runs the service to grant it.`,
    }),
  );
}

function route() {
  if (!token()) {
    signInPage();
    return;
  }
  const hash = location.hash || "#/broadcasts";
  const found = PAGES.find((candidate) => candidate.pattern.test(hash));
  if (!found) {
    location.replace("#/broadcasts");
    return;
  }
  cleanup();
  cleanup = () => {};
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === found.page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${found.title} · Telegram Broadcast Service`;
  clear(main);
  if (!may(found.scope)) {
    main.append(forbidden(found.scope, found.title));
    return;
  }
  const match = hash.match(found.pattern);
  const stop = found.render(main, ...match.slice(1));
  cleanup = typeof stop === "function" ? stop : () => {};
  main.focus({ preventScroll: true });
}

document.getElementById("sign-out").addEventListener("click", () => {
  forgetToken();
  signInPage();
});
document.getElementById("skip").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});
onUnauthorized(() => {
  if (document.getElementById("nav").hidden) return; // signing in: the form says why
  forgetToken();
  signInPage("The service no longer accepts this token: sign in again.");
});
window.addEventListener("hashchange", () => {
  if (location.hash.startsWith("#/")) route();
});
window.addEventListener("unhandledrejection", (event) => {
  const reason = event.reason;
  if (reason instanceof ApiError) {
    toast(reason.explain(), "error");
    event.preventDefault();
  }
});

async function start() {
  if (!token()) {
    signInPage();
    return;
  }
  try {
    await loadGrants();
  } catch (failure) {
    forgetToken();
    signInPage(failure instanceof ApiError ? failure.explain() : String(failure));
    return;
  }
  signedIn();
  route();
}

start();
