// The wallet's usage: time series by hour/day/month over a picked range, drill-down from a
// bucket to finer buckets and then to the requests behind it, and totals by route and method.

import { get, itemsOf } from "./api.js";
import { FINER, bucketStarts, floorTo, iso, nextStart, series, totalsBy } from "./buckets.js";
import { bucketChart } from "./charts.js";
import { h, section, table } from "./dom.js";
import { credits, localTime, timeElement, utcTime } from "./format.js";

const DAY = 86400;
export const RANGES = {
  "24h": { label: "Last 24 hours", span: DAY, bucket: "hour" },
  "7d": { label: "Last 7 days", span: 7 * DAY, bucket: "hour" },
  "30d": { label: "Last 30 days", span: 30 * DAY, bucket: "hour" },
  "90d": { label: "Last 90 days", span: 90 * DAY, bucket: "day" },
  "12mo": { label: "Last 12 months", span: 365 * DAY, bucket: "month" },
  custom: { label: "Custom dates" },
};

const LEVEL_NAMES = { month: "by month", day: "by day", hour: "by hour" };

/** A UTC day or month as a date, not as the local time it starts at: "Dec 2, 2026 (UTC)". */
function bucketName(bucket, start) {
  const options = bucket === "month" ? { year: "numeric", month: "long" } : { dateStyle: "medium" };
  return `${new Date(start * 1000).toLocaleDateString(undefined, { ...options, timeZone: "UTC" })} (UTC)`;
}

function routeLabel(row) {
  return row.route_name || row.route || "(no route)";
}

/** A local calendar date (yyyy-mm-dd from an <input type=date>) as epoch seconds. */
function localDate(text, plusDays = 0) {
  const [y, m, d] = text.split("-").map(Number);
  return new Date(y, m - 1, d + plusDays).getTime() / 1000;
}

function dateInputValue(seconds) {
  const d = new Date(seconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/**
 * The usage panel of `wallet`. `onSeries(starts, creditsPer, bucket)` hears each range's
 * series (the balance chart draws the burn-rate trend from it).
 */
export function usagePanel(wallet, { members, range = "7d", onSeries, available = true }) {
  const now = Math.floor(Date.now() / 1000);
  const start = RANGES[range] && RANGES[range].span ? RANGES[range] : RANGES["7d"];
  const state = { range: start === RANGES[range] ? range : "7d", bucket: start.bucket,
    since: now - start.span, until: now, stack: [] };

  const rangeSelect = h("select", { id: "range", "aria-label": "Range" },
    Object.entries(RANGES).map(([key, r]) => h("option", { value: key, selected: key === state.range }, r.label)));
  const bucketSelect = h("select", { id: "bucket", "aria-label": "Bucket" },
    ["hour", "day", "month"].map((b) => h("option", { value: b }, `by ${b}`)));
  const fromInput = h("input", { type: "date", id: "from", "aria-label": "From" });
  const toInput = h("input", { type: "date", id: "to", "aria-label": "To" });
  const customDates = h("span", { class: "custom-dates", hidden: true }, fromInput, "–", toInput);
  const membersBox = members
    ? h("label", { class: "inline" }, h("input", { type: "checkbox", id: "members", checked: true }), " include members")
    : null;
  const crumbs = h("nav", { id: "drill-path", class: "crumbs", "aria-label": "Drill-down" });
  const chartBox = h("div", { id: "usage-chart", class: "chart" });
  const summary = h("p", { id: "usage-summary", class: "muted" });
  const byRoute = h("div", { id: "by-route" });
  const byMethod = h("div", { id: "by-method" });
  const events = h("div", { id: "events" });
  const element = section("Usage",
    h("div", { class: "controls" }, rangeSelect, bucketSelect, customDates, membersBox),
    crumbs, summary, chartBox, events,
    h("div", { class: "columns" },
      h("div", {}, h("h3", {}, "By endpoint"), byRoute),
      h("div", {}, h("h3", {}, "By method"), byMethod)));
  element.id = "usage";

  const level = () => state.stack.at(-1) || { bucket: state.bucket, since: state.since, until: state.until };
  const query = (extra) => ({ wallet, members: membersBox && membersBox.firstChild.checked ? "true" : "",
    ...extra });

  async function load() {
    const { bucket, since, until } = level();
    const started = performance.now();
    element.dataset.loaded = "";
    events.replaceChildren();
    drawCrumbs();
    const range = { bucket, since: iso(floorTo(bucket, since)), until: iso(until) };
    Object.assign(element.dataset, { since: range.since, until: range.until });
    const [total, routes, methods] = await Promise.all([
      get("/v1/usage", query(range)),
      get("/v1/usage", query({ ...range, by: "route" })),
      get("/v1/usage", query({ ...range, by: "method" })),
    ]);
    const starts = bucketStarts(bucket, since, until);
    const { creditsPer, requestsPer } = series(itemsOf(total, "rows"), starts);
    const sum = (values) => values.reduce((a, b) => a + b, 0);
    summary.textContent = `${credits(sum(creditsPer))} credits, ${credits(sum(requestsPer))} ` +
      `requests, ${starts.length} buckets ${LEVEL_NAMES[bucket]}` +
      (FINER[bucket] ? " — click a bucket to look closer" : "");
    const end = starts.length ? nextStart(bucket, starts.at(-1)) : until;
    bucketChart(chartBox, starts, end, creditsPer, requestsPer, (i) => pick(starts[i], bucket));
    chartBox.dataset.buckets = String(starts.length);
    chartBox.dataset.bucket = bucket;
    breakdown(byRoute, totalsBy(itemsOf(routes, "rows"), "route", routeLabel), "Endpoint");
    breakdown(byMethod, totalsBy(itemsOf(methods, "rows"), "method"), "Method");
    if (onSeries && !state.stack.length) onSeries(starts, creditsPer, bucket);  // the range's trend
    element.dataset.renderMs = String(Math.round(performance.now() - started));
    element.dataset.loaded = "1";
  }

  function breakdown(target, totals, heading) {
    const most = Math.max(1, ...totals.map((t) => t.credits));
    target.replaceChildren(totals.length ? table([
      [heading, (t) => t.key],
      ["Credits", (t) => credits(t.credits), "num"],
      ["Requests", (t) => credits(t.requests), "num"],
      ["", (t) => h("span", { class: "bar", dataset: { share: String(t.credits / most) } }), "bar-cell"],
    ], totals) : h("p", { class: "muted" }, "No usage in this range."));
    for (const bar of target.querySelectorAll(".bar")) bar.style.width = `${Number(bar.dataset.share) * 100}%`;
  }

  function pick(start, bucket) {
    const finer = FINER[bucket];
    const end = nextStart(bucket, start);
    if (finer === "events") {
      showEvents(start, end);
      return;
    }
    state.stack.push({ bucket: finer, since: start, until: end,
      label: `${bucketName(bucket, start)} ${LEVEL_NAMES[finer]}` });
    load().catch(report);
  }

  async function showEvents(start, end) {
    events.dataset.loaded = "";
    const body = await get("/v1/usage/events", query({ since: iso(start), until: iso(end), limit: 200 }))
      .catch((error) => { report(error); return null; });
    if (!body) return;
    const rows = itemsOf(body, "events", "rows");
    const at = (e) => e.time || e.timestamp || e.at || e.created_at;
    events.replaceChildren(h("h3", {}, `Requests ${localTime(iso(start))} – ${localTime(iso(end))}`),
      rows.length ? table([
        ["Time", (e) => timeElement(at(e))],
        ["Method", (e) => e.method || ""],
        ["Endpoint", routeLabel],
        ["Path", (e) => e.path || ""],
        ["Status", (e) => e.status ?? "", "num"],
        ["Credits", (e) => credits(e.cost ?? e.credits), "num"],
        ["Consumer", (e) => e.consumer || ""],
        ["Id", (e) => h("code", {}, e.id || e.event_id || "")],
      ], rows, { caption: rows.length >= 200 ? "The newest 200 requests" : null })
        : h("p", { class: "muted" }, "No requests in this bucket."));
    events.dataset.loaded = "1";
    events.scrollIntoView({ block: "nearest" });
  }

  function drawCrumbs() {
    const top = h("button", { type: "button", class: "link", onclick: () => { state.stack = []; load().catch(report); } },
      `${RANGES[state.range].label} ${LEVEL_NAMES[state.bucket]}`);
    const parts = [top];
    state.stack.forEach((entry, i) => {
      parts.push(" › ", i === state.stack.length - 1 ? h("strong", { title: utcTime(iso(entry.since)) }, entry.label)
        : h("button", { type: "button", class: "link", onclick: () => { state.stack.length = i + 1; load().catch(report); } }, entry.label));
    });
    crumbs.replaceChildren(...parts);
  }

  function report(error) {
    events.replaceChildren(h("p", { class: "error", role: "alert" }, error.message));
  }

  function applyRange() {
    const r = RANGES[state.range];
    customDates.hidden = state.range !== "custom";
    const end = Math.floor(Date.now() / 1000);
    if (state.range === "custom") {
      if (!fromInput.value) fromInput.value = dateInputValue(state.since);
      if (!toInput.value) toInput.value = dateInputValue(end);
      state.since = localDate(fromInput.value);
      state.until = Math.min(localDate(toInput.value, 1), end);
      if (state.until <= state.since) state.until = state.since + DAY;
    } else {
      state.since = end - r.span;
      state.until = end;
    }
    state.stack = [];
    load().catch(report);
  }

  rangeSelect.addEventListener("change", () => {
    state.range = rangeSelect.value;
    if (RANGES[state.range].bucket) state.bucket = bucketSelect.value = RANGES[state.range].bucket;
    applyRange();
  });
  bucketSelect.addEventListener("change", () => { state.bucket = bucketSelect.value; applyRange(); });
  fromInput.addEventListener("change", applyRange);
  toInput.addEventListener("change", applyRange);
  if (membersBox) membersBox.addEventListener("change", () => load().catch(report));
  bucketSelect.value = state.bucket;

  if (!available) {
    element.replaceChildren(h("h2", {}, "Usage"), h("p", { class: "muted", id: "usage-off" },
      "Usage needs a usage store: start kong-credits admin with --store URL."));
    element.dataset.loaded = "1";
    return { element, load: async () => {} };
  }
  return { element, load: () => load().catch(report) };
}
