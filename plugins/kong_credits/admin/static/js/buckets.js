// UTC buckets as the usage store counts them: hour, day and month starts, and what is finer.

const SECONDS = { minute: 60, hour: 3600, day: 86400 };

/** The next finer level for drill-down; "events" means the requests themselves. */
export const FINER = { month: "day", day: "hour", hour: "events" };

export function floorTo(bucket, seconds) {
  if (bucket === "month") {
    const d = new Date(seconds * 1000);
    return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1) / 1000;
  }
  return Math.floor(seconds / SECONDS[bucket]) * SECONDS[bucket];
}

export function nextStart(bucket, start) {
  if (bucket === "month") {
    const d = new Date(start * 1000);
    return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) / 1000;
  }
  return start + SECONDS[bucket];
}

/** Every bucket start from `since` (rounded down) to before `until`. */
export function bucketStarts(bucket, since, until) {
  const starts = [];
  for (let t = floorTo(bucket, since); t < until && starts.length < 20000; t = nextStart(bucket, t)) {
    starts.push(t);
  }
  return starts;
}

/** ISO 8601 UTC without milliseconds, as the API takes it. */
export function iso(seconds) {
  return new Date(seconds * 1000).toISOString().replace(/\.\d+Z$/, "Z");
}

export function seconds(isoText) {
  return Math.floor(Date.parse(isoText) / 1000);
}

/** Usage rows (one per bucket and group) summed into aligned arrays of credits and requests. */
export function series(rows, starts) {
  const index = new Map(starts.map((start, i) => [start, i]));
  const creditsPer = new Array(starts.length).fill(0);
  const requestsPer = new Array(starts.length).fill(0);
  for (const row of rows) {
    const i = index.get(seconds(row.start));
    if (i === undefined) continue;
    creditsPer[i] += row.credits || 0;
    requestsPer[i] += row.requests || 0;
  }
  return { creditsPer, requestsPer };
}

/** Rows summed by one dimension, largest credits first: [{key, credits, requests}]. */
export function totalsBy(rows, key, label = (row) => row[key]) {
  const totals = new Map();
  for (const row of rows) {
    const name = label(row) ?? "";
    const total = totals.get(name) || { key: name, credits: 0, requests: 0 };
    total.credits += row.credits || 0;
    total.requests += row.requests || 0;
    totals.set(name, total);
  }
  return [...totals.values()].sort((a, b) => b.credits - a.credits || b.requests - a.requests);
}
