// The wallet view: balance and its history, burn rate and projection, usage, team members,
// grants, recent alerts and the price list. Opened by an admin token or the wallet's own.

import { features, get, itemsOf, walletPath } from "./api.js";
import { balanceChart } from "./charts.js";
import { h, section, stat, table } from "./dom.js";
import { credits, fromNow, localTime, rate, timeElement } from "./format.js";
import { pricesPanel } from "./prices.js";
import { teamPanel } from "./team.js";
import { usagePanel } from "./usage.js";

const MINUTES = { hour: 60, day: 1440, month: 43200 };

function summary(doc) {
  const budget = doc.budget || {};
  const cap = (value) => (value === null || value === undefined ? null : `cap ${credits(value)}`);
  const empty = doc.projected_empty_at
    ? h("span", {}, timeElement(doc.projected_empty_at), h("br"), fromNow(doc.projected_empty_at))
    : "not burning";
  return h("div", { class: "stats" },
    stat("Balance", credits(doc.balance), doc.overdraft ? `overdraft ${credits(doc.overdraft)}` : "credits", "balance"),
    stat("Burn rate", rate(doc.burn_rate_per_minute), "credits / minute", "burn-rate"),
    stat("Projected empty", empty, null, "projected-empty"),
    stat("Spent today", credits(doc.spent_today), cap(budget.daily_cap) || "UTC day"),
    stat("Spent this month", credits(doc.spent_this_month), cap(budget.monthly_cap) || "UTC month"),
    stat("Refused", credits((doc.refused_credits || 0) + (doc.refused_rate_limit || 0) + (doc.refused_budget || 0)),
      `credits ${credits(doc.refused_credits)} · rate ${credits(doc.refused_rate_limit)} · budget ${credits(doc.refused_budget)}`));
}

function grantsPanel(grants) {
  return section("Grants", grants.length ? table([
    ["Grant", (g) => h("code", {}, g.id)],
    ["Remaining", (g) => credits(g.remaining), "num"],
    ["Amount", (g) => credits(g.amount), "num"],
    ["Priority", (g) => g.priority, "num"],
    ["Expires", (g) => (g.expires_at ? h("span", {}, timeElement(g.expires_at), " ", h("span", { class: "muted" }, fromNow(g.expires_at))) : "never")],
    ["Status", (g) => h("span", { class: `badge ${g.status}` }, g.status)],
  ], grants) : h("p", { class: "muted" }, "No grants yet."));
}

/** An alert's field as read: credits with separators, a millisecond time as local time. */
function detail(name, value) {
  if (typeof value !== "number") return value;
  if (/(_at|_end|_start|time)$/.test(name) && value > 1e11) return localTime(new Date(value).toISOString());
  return credits(value);
}

function alertsPanel(alerts) {
  const details = (a) => Object.entries(a.data || {}).map(([k, v]) => `${k.replaceAll("_", " ")} ${detail(k, v)}`).join(" · ");
  return section("Recent alerts", alerts.length ? table([
    ["Time", (a) => timeElement(a.created_at || a.at || a.timestamp)],
    ["Alert", (a) => h("span", { class: "badge alert" }, a.type)],
    ["Details", details],
  ], alerts) : h("p", { class: "muted" }, "No alerts."));
}

/** The balance chart: ledger history, projection to zero, burn rate per usage bucket. */
function balancePanel(doc, entries) {
  const chartBox = h("div", { id: "balance-chart", class: "chart" });
  const element = section("Balance", chartBox);
  const now = Date.now() / 1000;
  const points = entries.filter((e) => e.at).map((e) => [Date.parse(e.at) / 1000, e.balance])
    .sort((a, b) => a[0] - b[0]);
  points.push([Math.max(now, ...points.map((p) => p[0])), doc.balance]);
  const history = [points.map((p) => p[0]), points.map((p) => p[1])];
  let projection = [[], []];
  if (doc.projected_empty_at && doc.balance > 0) {
    const emptyAt = Date.parse(doc.projected_empty_at) / 1000;
    const horizon = now + Math.max(7 * 86400, now - points[0][0]);
    const end = Math.min(emptyAt, horizon);
    projection = [[now, end], [doc.balance, Math.max(0, doc.balance * (1 - (end - now) / (emptyAt - now)))]];
  }
  let burn = [[], []];
  const drawNow = () => balanceChart(chartBox, history, projection, burn);
  drawNow();
  return {
    element,
    /** Redraw with the burn-rate trend of the usage series shown below. */
    setBurn(starts, creditsPer, bucket) {
      // Over the balance history's span only: a 90-day trend would squash an 11-day history.
      const from = history[0][0];
      const kept = starts.map((t, i) => i).filter((i) => starts[i] + 1 >= from);
      burn = [kept.map((i) => starts[i]), kept.map((i) => creditsPer[i] / MINUTES[bucket])];
      drawNow();
      element.dataset.loaded = "1";
    },
  };
}

/** Render the wallet view of `wallet` into `root` (`range`: the usage range to start with,
 * e.g. "30d"); throws the API's error (e.g. 403). */
export async function walletView(root, wallet, { range } = {}) {
  const started = performance.now();
  root.dataset.loaded = "";
  const doc = await get(walletPath(wallet));
  const [ledger, alerts, { usage: withUsage }] = await Promise.all([
    get(walletPath(wallet, "/ledger"), { limit: 1000 }),
    get(walletPath(wallet, "/alerts"), { limit: 20 }),
    features(),
  ]);
  const isTeam = !wallet.includes("/");
  const balance = balancePanel(doc, itemsOf(ledger, "entries"));
  const usage = usagePanel(wallet, { members: isTeam, range, available: withUsage,
    onSeries: (...args) => balance.setBurn(...args) });
  const team = isTeam ? teamPanel(wallet, { withUsage }) : null;
  const prices = pricesPanel();
  root.replaceChildren(
    h("div", { class: "title-row" }, h("h1", { id: "wallet-name" }, doc.wallet || wallet),
      doc.parent ? h("a", { href: `#/wallet/${encodeURIComponent(doc.parent)}` }, `team ${doc.parent}`) : null,
      doc.abuse_suspected ? h("span", { class: "badge alert" }, "unusual spending") : null),
    summary(doc), balance.element, usage.element,
    team ? team.element : null,
    grantsPanel(doc.grants || []), alertsPanel(itemsOf(alerts, "alerts")),
    prices.element);
  await Promise.all([usage.load(), team ? team.load() : null, prices.load()]);
  root.dataset.renderMs = String(Math.round(performance.now() - started));
  root.dataset.loaded = "1";
}
