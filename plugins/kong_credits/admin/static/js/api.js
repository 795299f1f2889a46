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

async function openJson(path) {
  const response = await fetch(path, { credentials: "omit", cache: "no-store" });
  return response.json();
}

/**
 * What this admin process serves beyond wallets, asked once from its open documents: the
 * OpenAPI paths it has, and `/healthz`, which names the usage store when the process was
 * started with one (`--store`). A panel whose endpoint is absent says so instead of calling
 * it. If either cannot be read, every panel tries its endpoint.
 */
export function features() {
  featuresOnce ||= Promise.all([openJson("/openapi.json"), openJson("/healthz")])
    .then(([openapi, health]) => {
      const paths = openapi.paths || {};
      const store = "store" in health || /\bstore\b/.test(health.detail || "");
      return { usage: store && "/v1/usage" in paths, prices: "/v1/prices" in paths };
    })
    .catch(() => ({ usage: true, prices: true }));
  return featuresOnce;
}
