// The admin API as the dashboard uses it: the bearer token from sessionStorage on every call.
// No cookies: the token lives in this tab's session storage and leaves with the tab.

const TOKEN_KEY = "kong-credits.token";
const WALLET_KEY = "kong-credits.wallet";

export class ApiError extends Error {
  constructor(status, title, detail) {
    super(detail || title || `HTTP ${status}`);
    this.status = status;
    this.title = title;
  }
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  get wallet() { return sessionStorage.getItem(WALLET_KEY) || ""; },
  signIn(token, wallet) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(WALLET_KEY, wallet || "");
  },
  signOut() { sessionStorage.clear(); },
};

/** GET `path` (with `params`, empty values left out) as JSON; an ApiError on a non-2xx. */
export async function get(path, params = {}) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(name, String(value));
  }
  const url = query.size ? `${path}?${query}` : path;
  const response = await fetch(url, {
    headers: { Authorization: `Bearer ${session.token}`, Accept: "application/json" },
    credentials: "omit",
    cache: "no-store",
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, body && body.title, body && body.detail);
  }
  return body;
}

/** The wallet's URL, each `/`-separated segment escaped (a team member is `team/member`). */
export function walletPath(wallet, tail = "") {
  return `/v1/wallets/${wallet.split("/").map(encodeURIComponent).join("/")}${tail}`;
}

/** The list inside a paginated or wrapped answer, whatever the key it is under. */
export function itemsOf(body, ...keys) {
  if (Array.isArray(body)) return body;
  for (const key of [...keys, "items", "data", "results"]) {
    if (body && Array.isArray(body[key])) return body[key];
  }
  return [];
}

/** Every page of a cursor-paginated list, up to `max` items. */
export async function getAll(path, params, key, max = 5000) {
  const items = [];
  let cursor = "";
  do {
    const body = await get(path, { ...params, cursor });
    items.push(...itemsOf(body, key));
    cursor = body && (body.next_cursor || body.cursor_next || body.next) || "";
  } while (cursor && items.length < max);
  return items;
}

let featuresOnce = null;

/**
 * What this admin process serves beyond wallets, from the open `/healthz`: `usage` is true
 * when it was started with a usage store (`--store`), so a dashboard without one shows why
 * instead of calling endpoints that cannot answer.
 */
export function features() {
  featuresOnce ||= fetch("/healthz", { credentials: "omit", cache: "no-store" })
    .then((response) => response.json())
    .then((body) => ({ usage: "store" in body || /\bstore\b/.test(body.detail || "") }))
    .catch(() => ({ usage: true }));
  return featuresOnce;
}
