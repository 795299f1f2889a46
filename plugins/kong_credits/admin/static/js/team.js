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

/** Members are the wallets named `team/...`: those listed (a wallet token may list its own),
 * and any that only spent from the team this month without a grant or budget of their own. */
async function members(wallet, withUsage) {
  const listed = await getAll("/v1/wallets", { prefix: `${wallet}/`, limit: MAX_MEMBERS }, "wallets", MAX_MEMBERS);
  const known = new Set(listed.map((row) => row.wallet));
  const now = new Date();
  const monthStart = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1) / 1000;
  const usage = withUsage ? await get("/v1/usage", { wallet, members: "true", by: "wallet", bucket: "month", since: iso(monthStart) })
    .catch(() => null) : null;
  const unlisted = [...new Set(itemsOf(usage, "rows").map((row) => row.wallet))]
    .filter((name) => name && name.startsWith(`${wallet}/`) && !known.has(name))
    .slice(0, Math.max(0, MAX_MEMBERS - listed.length));
  const fetched = await Promise.all(unlisted.map((name) => get(walletPath(name))));
  return [...listed, ...fetched].sort((a, b) => (a.wallet < b.wallet ? -1 : 1));
}

export function teamPanel(wallet, { withUsage }) {
  const body = h("div", { id: "team-members" });
  const element = section("Team members", body);
  element.hidden = true;
  async function load() {
    let docs;
    try {
      docs = await members(wallet, withUsage);
    } catch (error) {
      body.replaceChildren(h("p", { class: "error" }, `Members unavailable: ${error.message}`));
      element.hidden = false;
      return;
    }
    if (!docs.length) return;
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
