// The price list: what each route costs and its limits, as the admin API reads kong.yml.

import { features, get, itemsOf } from "./api.js";
import { h, section, table } from "./dom.js";
import { credits } from "./format.js";

const FIRST = ["route", "route_name", "name", "service", "methods", "paths", "cost", "price"];

function show(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return credits(value);
  if (Array.isArray(value)) return value.map(show).join(", ");
  if (typeof value === "object") return Object.entries(value).map(([k, v]) => `${k} ${show(v)}`).join(" · ");
  return String(value);
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
      rows = itemsOf(await get("/v1/prices"), "prices", "routes");
    } catch (error) {
      body.replaceChildren(h("p", { class: "muted" }, `Price list unavailable: ${error.message}`));
      return;
    }
    const keys = [...new Set(rows.flatMap((row) => Object.keys(row)))]
      .sort((a, b) => (FIRST.indexOf(a) + 1 || 99) - (FIRST.indexOf(b) + 1 || 99));
    const label = (key) => key.replaceAll("_", " ").replace(/^./, (c) => c.toUpperCase());
    body.replaceChildren(rows.length
      ? table(keys.map((key) => [label(key), (row) => show(row[key]), typeof rows[0][key] === "number" ? "num" : null]), rows)
      : h("p", { class: "muted" }, "No priced routes."));
  }
  return { element, load };
}
