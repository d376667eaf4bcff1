// The REST API, called with the API token as the Authorization header. The token lives in
// this tab's sessionStorage only: never in a URL, a cookie or a log line.

const TOKEN_KEY = "tgbroadcast.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** A refused request: the problem+json answer (status, detail, errors by field). */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.title = problem.title || "";
    this.detail = problem.detail || "";
    this.errors = problem.errors || [];
    this.problem = problem;
  }

  /** What the user should read: a 403 says what the token lacks and what to do. */
  explain() {
    if (this.status === 403) {
      return `Not allowed for this API token: ${this.detail}. Ask whoever runs the service for a token that may do it.`;
    }
    if (this.status === 401) return "The API token was not accepted: sign in again.";
    if (this.status === 429) return `Too many requests: ${this.detail}`;
    if (this.status === 0) return this.detail;
    return this.detail || this.title;
  }
}

const listeners = new Set();
/** Called with every 401: the page signs out. */
export function onUnauthorized(listener) {
  listeners.add(listener);
}

/** A 401 met outside `api()` (an event stream's): the same as one of its. */
export function unauthorized() {
  for (const listener of listeners) listener();
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    for (const item of Array.isArray(value) ? value : [value]) search.append(key, String(item));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export function headers(extra = {}) {
  return { Authorization: `Bearer ${token()}`, ...extra };
}

/** One request; the parsed JSON answer, or ApiError. */
export async function api(path, { method = "GET", body, form, params, raw = false, signal } = {}) {
  const init = { method, headers: headers({ Accept: "application/json" }), signal, cache: "no-store" };
  if (form) init.body = form;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(`/${path.replace(/^\//, "")}${query(params)}`, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, { detail: "The service could not be reached; check the connection." });
  }
  if (!response.ok) {
    let problem = { detail: `HTTP ${response.status}` };
    try {
      problem = await response.json();
    } catch {
      /* not JSON: keep the status */
    }
    if (response.status === 401) unauthorized();
    throw new ApiError(response.status, problem);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

/** What the signed-in token may do (GET /v1/token). */
export const grants = { name: "", scopes: new Set(), bots: ["*"], limits: new Map() };

export async function loadGrants() {
  const answer = await api("/v1/token");
  grants.name = answer.name;
  grants.scopes = new Set(answer.scopes);
  grants.bots = answer.bots;
  grants.limits = new Map(answer.bot_limits.map((bot) => [bot.name, bot]));
  return grants;
}

export const may = (scope) => grants.scopes.has(scope);

/** The names of the bots this token may use and the service knows. */
export function botNames() {
  const known = [...grants.limits.keys()];
  if (known.length) return known;
  return grants.bots.includes("*") ? [] : [...grants.bots];
}

/** The rate limit a broadcast is held to, messages per second; null when unknown. */
export function limitOf(broadcast) {
  const bot = grants.limits.get(broadcast.bot);
  if (!bot) return null;
  return broadcast.allow_paid_broadcast && !broadcast.paid_stopped_at
    ? bot.paid_rate_limit
    : bot.rate_limit;
}

/** Downloads an authenticated answer as a file (the CSV export). */
export async function download(path, params, filename) {
  const response = await api(path, { params, raw: true });
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  // The browser reads the blob when its download starts, later on a busy machine: kept a minute.
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  return blob.size;
}

/** Uploads a body with progress (XMLHttpRequest: fetch reports no upload progress). */
export function upload(path, params, body, contentType, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", `/${path.replace(/^\//, "")}${query(params)}`);
    request.setRequestHeader("Authorization", `Bearer ${token()}`);
    request.setRequestHeader("Content-Type", contentType);
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    request.addEventListener("load", () => {
      let answer = {};
      try {
        answer = JSON.parse(request.responseText || "{}");
      } catch {
        answer = { detail: `HTTP ${request.status}` };
      }
      if (request.status >= 200 && request.status < 300) resolve(answer);
      else reject(new ApiError(request.status, answer));
    });
    request.addEventListener("error", () =>
      reject(new ApiError(0, { detail: "The upload was cut off; check the connection." })),
    );
    request.send(body);
  });
}
