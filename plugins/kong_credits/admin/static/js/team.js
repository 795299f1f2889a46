// A team (parent wallet): its members side by side, each against its member caps.

import { get, getAll, itemsOf, walletPath } from "./api.js";
import { iso } from "./buckets.js";
import { h, section, table } from "./dom.js";
import { credits, rate } from "./format.js";

const MAX_MEMBERS = 100;

/** "120 / 500" with a bar showing the used share of the cap (no cap: just the figure). */
function againstCap(spent, cap) {
  if (cap === null || cap === undefined) return h("span", {}, credits(spent), h("span", { class: "muted" }, " no cap"));
  const bar = h("span", { class: "bar" + (spent >= cap ? " full" : "") });
  bar.style.width = `${Math.min(100, (100 * spent) / Math.max(cap, 1))}%`;
  return h("span", { class: "capped" }, `${credits(spent)} / ${credits(cap)}`, h("span", { class: "track" }, bar));
}

/** Members are the wallets named `team/...`: listed (admin) or seen in this month's usage. */
async function memberNames(wallet, admin) {
  const names = new Set();
  if (admin) {
    const listed = await getAll("/v1/wallets", { prefix: `${wallet}/`, limit: MAX_MEMBERS }, "wallets", MAX_MEMBERS);
    for (const row of listed) names.add(row.wallet || row.name);
  }
  const now = new Date();
  const monthStart = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1) / 1000;
  const usage = await get("/v1/usage", { wallet, members: "true", by: "wallet", bucket: "month", since: iso(monthStart) });
  for (const row of itemsOf(usage, "rows")) if (row.wallet && row.wallet !== wallet) names.add(row.wallet);
  return [...names].filter((name) => name && name.startsWith(`${wallet}/`)).sort().slice(0, MAX_MEMBERS);
}

export function teamPanel(wallet, { admin }) {
  const body = h("div", { id: "team-members" });
  const element = section("Team members", body);
  element.hidden = true;
  async function load() {
    const names = await memberNames(wallet, admin);
    if (!names.length) return;
    const docs = await Promise.all(names.map((name) => get(walletPath(name))));
    body.replaceChildren(table([
      ["Member", (d) => h("a", { href: `#/wallet/${encodeURIComponent(d.wallet)}` }, d.wallet.slice(wallet.length + 1))],
      ["Today / daily cap", (d) => againstCap(d.spent_today, (d.budget || {}).member_daily_cap)],
      ["This month / monthly cap", (d) => againstCap(d.spent_this_month, (d.budget || {}).member_monthly_cap)],
      ["Burn / min", (d) => rate(d.burn_rate_per_minute), "num"],
      ["Own balance", (d) => credits(d.balance), "num"],
    ], docs));
    element.hidden = false;
  }
  return { element, load };
}
