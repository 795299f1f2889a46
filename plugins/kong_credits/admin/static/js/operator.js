// The operator view (admin token): every wallet with balance, burn rate, projection,
// refusals and open alerts; search by prefix; top spenders today; refusals over time.

import { features, get, getAll, itemsOf, walletPath } from "./api.js";
import { iso } from "./buckets.js";
import { linesChart } from "./charts.js";
import { h, section, stat, table } from "./dom.js";
import { credits, fromNow, rate, timeElement } from "./format.js";

const PAGE = 200;
const MAX_WALLETS = 5000;
const SAMPLE_EVERY_MS = 15000;
const SAMPLES_KEY = "kong-credits.refusal-samples";
const REFUSALS = { refused_credits: "credits", refused_rate_limit: "rate limit", refused_budget: "budget" };

const OPEN_ALERT_S = 86400;
const FETCHES_AT_ONCE = 6;
const walletLink = (name) => h("a", { href: `#/wallet/${encodeURIComponent(name)}` }, name);

function totals(wallets) {
  const sum = (field) => wallets.reduce((a, w) => a + (w[field] || 0), 0);
  return { balance: sum("balance"), burn: sum("burn_rate_per_minute"), refused_credits: sum("refused_credits"),
    refused_rate_limit: sum("refused_rate_limit"), refused_budget: sum("refused_budget") };
}

/** Refusal counters are totals: sampled while the page is open, their increase is charted. */
function recordSample(sum) {
  const samples = JSON.parse(sessionStorage.getItem(SAMPLES_KEY) || "[]");
  samples.push({ t: Math.floor(Date.now() / 1000), ...Object.fromEntries(Object.keys(REFUSALS).map((k) => [k, sum[k]])) });
  const kept = samples.slice(-720);
  sessionStorage.setItem(SAMPLES_KEY, JSON.stringify(kept));
  return kept;
}

function refusalSeries(samples) {
  const named = {};
  for (const [field, label] of Object.entries(REFUSALS)) {
    const times = [];
    const values = [];
    for (let i = 1; i < samples.length; i++) {
      times.push(samples[i].t);
      values.push(Math.max(0, samples[i][field] - samples[i - 1][field]));
    }
    named[label] = [times, values];
  }
  return named;
}

export async function operatorView(root) {
  root.dataset.loaded = "";
  const search = h("input", { type: "search", id: "prefix", placeholder: "Search wallets by prefix",
    "aria-label": "Search wallets by prefix", spellcheck: "false" });
  const stats = h("div", { class: "stats", id: "operator-stats" });
  const list = h("div", { id: "wallets" });
  const more = h("button", { type: "button", id: "more", hidden: true }, "Show more");
  const spenders = h("div", { id: "top-spenders" });
  const refusalsChart = h("div", { id: "refusals-chart", class: "chart" });
  const refusalsNote = h("p", { class: "muted" });
  root.replaceChildren(h("h1", {}, "Wallets"), stats,
    h("div", { class: "columns" }, section("Top spenders today", spenders),
      section("Refusals over time", refusalsNote, refusalsChart)),
    section("All wallets", search, list, more));

  let wallets = [];
  const alertCounts = new Map();  // wallet -> alerts of the last 24 h, fetched once per page load

  /** Open alerts: the API's count when it gives one, else the wallet's alerts of the last
   * 24 hours, fetched for the rows on screen only, a few at a time. */
  const openAlerts = (w) => w.open_alerts ?? alertCounts.get(w.wallet);
  async function countAlerts(rows) {
    const todo = rows.filter((w) => w.open_alerts === undefined && !alertCounts.has(w.wallet));
    for (const w of todo) alertCounts.set(w.wallet, undefined);
    const since = Date.now() / 1000 - OPEN_ALERT_S;
    const worker = async () => {
      for (let w = todo.shift(); w; w = todo.shift()) {
        const alerts = itemsOf(await get(walletPath(w.wallet, "/alerts"), { limit: 50 }), "alerts");
        const count = alerts.filter((a) => Date.parse(a.created_at) / 1000 >= since).length;
        alertCounts.set(w.wallet, count);
        const cell = list.querySelector(`[data-alerts="${CSS.escape(w.wallet)}"]`);
        if (cell) cell.replaceChildren(alertBadge(count));
      }
    };
    await Promise.all(Array.from({ length: FETCHES_AT_ONCE }, worker));
  }
  const alertBadge = (count) => (count === undefined ? "…"
    : count ? h("span", { class: "badge alert", title: "alerts in the last 24 hours" }, credits(count)) : "0");
  let shown = PAGE;
  let sort = { field: "balance", descending: true };

  function drawTable() {
    const sorted = [...wallets].sort((a, b) => {
      const value = (w) => (sort.field === "open_alerts" ? openAlerts(w) : w[sort.field]) ?? -Infinity;
      const x = value(a);
      const y = value(b);
      return (x < y ? -1 : x > y ? 1 : 0) * (sort.descending ? -1 : 1);
    });
    const heading = (title, field) => h("button", { type: "button", class: "sort", onclick: () => {
      sort = { field, descending: sort.field === field ? !sort.descending : true };
      drawTable();
    } }, title, sort.field === field ? (sort.descending ? " ▾" : " ▴") : "");
    list.replaceChildren(wallets.length ? table([
      [heading("Wallet", "wallet"), (w) => walletLink(w.wallet)],
      [heading("Balance", "balance"), (w) => credits(w.balance), "num"],
      [heading("Burn / min", "burn_rate_per_minute"), (w) => rate(w.burn_rate_per_minute), "num"],
      [heading("Projected empty", "projected_empty_at"), (w) => (w.projected_empty_at
        ? h("span", {}, timeElement(w.projected_empty_at), h("span", { class: "muted" }, ` ${fromNow(w.projected_empty_at)}`)) : "–")],
      [heading("Refused credits", "refused_credits"), (w) => credits(w.refused_credits), "num"],
      [heading("Refused rate limit", "refused_rate_limit"), (w) => credits(w.refused_rate_limit), "num"],
      [heading("Refused budget", "refused_budget"), (w) => credits(w.refused_budget), "num"],
      [heading("Open alerts", "open_alerts"), (w) => h("span", { dataset: { alerts: w.wallet } }, alertBadge(openAlerts(w))), "num"],
    ], sorted.slice(0, shown)) : h("p", { class: "muted" }, "No wallets match."));
    countAlerts(sorted.slice(0, shown)).catch(showError);
    more.hidden = wallets.length <= shown;
    more.textContent = `Show more (${credits(wallets.length - shown)} left)`;
  }

  async function loadWallets() {
    wallets = await getAll("/v1/wallets", { prefix: search.value, limit: 500 }, "wallets", MAX_WALLETS);
    shown = PAGE;
    const sum = totals(wallets);
    stats.replaceChildren(
      stat("Wallets", credits(wallets.length), search.value ? `prefix “${search.value}”` : "all", "wallet-count"),
      stat("Total balance", credits(sum.balance), "credits", "total-balance"),
      stat("Burning", rate(sum.burn), "credits / minute"),
      stat("Refused", credits(sum.refused_credits + sum.refused_rate_limit + sum.refused_budget),
        `credits ${credits(sum.refused_credits)} · rate ${credits(sum.refused_rate_limit)} · budget ${credits(sum.refused_budget)}`));
    drawTable();
    return sum;
  }

  async function loadSpenders() {
    const now = new Date();
    const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()) / 1000;
    if (!(await features()).usage) {
      spenders.replaceChildren(h("p", { class: "muted" }, "Needs a usage store: start kong-credits admin with --store."));
      return;
    }
    let body;
    try {
      body = await get("/v1/usage", { by: "wallet", bucket: "day", since: iso(today) });
    } catch (error) {
      spenders.replaceChildren(h("p", { class: "error" }, `Usage unavailable: ${error.message}`));
      return;
    }
    const rows = itemsOf(body, "rows").sort((a, b) => b.credits - a.credits).slice(0, 8);
    spenders.replaceChildren(rows.length ? table([
      ["Wallet", (r) => walletLink(r.wallet)],
      ["Credits", (r) => credits(r.credits), "num"],
      ["Requests", (r) => credits(r.requests), "num"],
    ], rows) : h("p", { class: "muted" }, "No usage today (UTC)."));
  }

  function drawRefusals(sum) {
    if (search.value) return;  // the chart counts every wallet, not a search's
    const samples = recordSample(sum);
    if (samples.length > 1) {
      refusalsNote.textContent = `New refusals every ${SAMPLE_EVERY_MS / 1000} s, all wallets, ` +
        `since ${new Date(samples[0].t * 1000).toLocaleTimeString()}.`;
      linesChart(refusalsChart, refusalSeries(samples));
      return;
    }
    // One sample is no series yet: the totals so far, by reason.
    refusalsNote.textContent = `Totals so far; the chart of new refusals starts in ` +
      `${SAMPLE_EVERY_MS / 1000} s and fills in while this page is open.`;
    const most = Math.max(1, ...Object.keys(REFUSALS).map((k) => sum[k]));
    refusalsChart.replaceChildren(table([
      ["Reason", ([field]) => REFUSALS[field]],
      ["Refused", ([field]) => credits(sum[field]), "num"],
      ["", ([field]) => { const bar = h("span", { class: "bar" }); bar.style.width = `${(100 * sum[field]) / most}%`; return bar; }, "bar-cell"],
    ], Object.keys(REFUSALS).map((field) => [field])));
  }

  let typing;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => loadWallets().catch(showError), 250);
  });
  more.addEventListener("click", () => { shown += PAGE; drawTable(); });
  const showError = (error) => list.replaceChildren(h("p", { class: "error", role: "alert" }, error.message));

  const started = performance.now();
  const [sum] = await Promise.all([loadWallets(), loadSpenders()]);
  drawRefusals(sum);
  root.dataset.renderMs = String(Math.round(performance.now() - started));
  root.dataset.loaded = "1";
  const timer = setInterval(() => {
    if (!root.isConnected || root.dataset.view !== "operator") { clearInterval(timer); return; }
    loadWallets().then(drawRefusals).catch(showError);
  }, SAMPLE_EVERY_MS);
}
