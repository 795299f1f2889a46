// The price list: what each route costs and its rate limits, as `kong-credits prices --json`.

import { features, get, itemsOf } from "./api.js";
import { h, section, table } from "./dom.js";
import { credits } from "./format.js";

/** A price rule's terms: "per request 1 · per kb response 2 · status free 500, 502". */
function terms(rule) {
  const text = (value) => (Array.isArray(value) ? value.join(", ")
    : typeof value === "number" ? credits(value) : String(value));
  return Object.entries(rule).map(([name, value]) => `${name.replaceAll("_", " ")} ${text(value)}`).join(" · ");
}

/** "1", "free", "not priced"; metered: "20 held, then X-Units-Used, at most 400". */
function price(row) {
  if (row.cost === null || row.cost === undefined) return h("span", { class: "muted" }, "not priced");
  if (!row.metered) return row.cost === 0 ? "free" : credits(row.cost);
  const cap = row.max_cost ? `, at most ${credits(row.max_cost)}` : "";
  const rule = (row.config || {}).price;
  const then = row.cost_header ? `the ${row.cost_header} header` : rule ? terms(rule) : "the response";
  return h("span", { title: `${credits(row.cost)} held at the request, then priced by ${then}${cap}` },
    `${credits(row.cost)} held, then ${then}${cap}`);
}

function limits(row) {
  const entries = Object.entries(row.rate_limit || {});
  return entries.length ? entries.map(([period, n]) => `${credits(n)} / ${period}`).join(", ") : "none";
}

export function pricesPanel() {
  const body = h("div", { id: "prices" });
  const element = section("Prices", body);
  async function load() {
    if (!(await features()).prices) {
      body.replaceChildren(h("p", { class: "muted" }, "This admin serves no price list."));
      return;
    }
    let rows;
    try {
      rows = itemsOf(await get("/v1/prices"), "prices");
    } catch (error) {
      body.replaceChildren(h("p", { class: "muted" }, `Price list unavailable: ${error.message}`));
      return;
    }
    const any = (value) => (value === "*" ? h("span", { class: "muted" }, "any") : value);
    body.replaceChildren(rows.length ? table([
      ["Endpoint", (row) => row.route],
      ["Service", (row) => row.service || ""],
      ["Method", (row) => any(row.method)],
      ["Path", (row) => any(row.path)],
      ["Credits per request", price, "num wrap"],
      ["Rate limit", limits],
      ["Mode", (row) => row.mode || ""],
    ], rows) : h("p", { class: "muted" }, "No routes in the price list."));
  }
  return { element, load };
}
