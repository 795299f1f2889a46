// uPlot charts sized to their container; times on the x axis are in seconds, drawn in the
// viewer's zone, with the UTC time in the legend when hovering.

import { compact, credits, rate, utcTime } from "./format.js";

const COLORS = ["#2563eb", "#dc2626", "#d97706", "#059669", "#7c3aed", "#db2777"];

function width(target) {
  return Math.max(280, target.clientWidth || target.parentElement.clientWidth || 600);
}

function height(target) {
  return window.innerWidth < 600 ? 200 : 260;
}

/** Axis labels: short (1.5M) unless that would print two ticks alike (1.52M, 1.53M). */
function axisValues(ticks) {
  const short = ticks.map(compact);
  return new Set(short).size === short.length ? short : ticks.map(credits);
}

const utcLegend = (u, seconds) => (seconds == null ? "–" :
  `${new Date(seconds * 1000).toLocaleString()} (${utcTime(new Date(seconds * 1000).toISOString())})`);

/** Draw `options` with `data` into `target` (replacing its chart) and keep it sized. */
function draw(target, options, data) {
  if (target.chart) target.chart.destroy();
  if (target.resizer) target.resizer.disconnect();
  target.replaceChildren();
  const chart = new uPlot({ width: width(target), height: height(target), ...options }, data, target);
  target.chart = chart;
  target.resizer = new ResizeObserver(() => {
    const next = width(target);
    if (Math.abs(next - chart.width) > 4) chart.setSize({ width: next, height: height(target) });
  });
  target.resizer.observe(target);
  return chart;
}

/** The index of the bucket holding time `value` (buckets start at `starts`), or -1. */
function bucketAt(starts, value) {
  let low = 0;
  let high = starts.length - 1;
  if (high < 0 || value < starts[0]) return -1;
  while (low < high) {  // the last start <= value
    const middle = (low + high + 1) >> 1;
    if (starts[middle] <= value) low = middle;
    else high = middle - 1;
  }
  return low;
}

/**
 * Credits per bucket as bars (and requests as a line on its own axis), each bar spanning its
 * bucket, from `starts[i]` to the next start (the last one to `end`). `onPick(index)` is
 * called with the bucket clicked, for drill-down.
 */
export function bucketChart(target, starts, end, creditsPerBucket, requestsPerBucket, onPick) {
  const chart = draw(target, {
    // No drag-zoom here: a click picks a bucket, even one uPlot takes for a tiny drag. The
    // legend and the click both name the bucket under the pointer, not the nearest start.
    cursor: { drag: { x: false, y: false, click: () => {} }, points: { show: false },
      dataIdx: (u, series, closest, value) => Math.max(0, bucketAt(starts, value)) },
    legend: { live: true },
    scales: { x: { time: true, range: () => [starts[0], end] }, requests: { auto: true } },
    series: [
      { value: utcLegend },
      { label: "credits", stroke: COLORS[0], fill: "rgba(37,99,235,0.35)", width: 1,
        paths: uPlot.paths.bars({ size: [0.85, 60], align: 1 }), value: (u, v) => credits(v) },
      { label: "requests", stroke: COLORS[2], scale: "requests", width: 1.5, points: { show: false },
        value: (u, v) => credits(v) },
    ],
    axes: [
      {},
      { values: (u, ticks) => axisValues(ticks), size: 56 },
      { scale: "requests", side: 1, grid: { show: false }, values: (u, ticks) => axisValues(ticks),
        size: 56 },
    ],
  }, [starts, creditsPerBucket, requestsPerBucket]);
  chart.over.style.cursor = onPick ? "pointer" : "default";
  if (onPick) {
    chart.over.addEventListener("click", (event) => {
      // From the click's own position: the cursor may not have moved over a fresh chart.
      const x = event.clientX - chart.over.getBoundingClientRect().left;
      const index = bucketAt(starts, chart.posToVal(x, "x"));
      if (index >= 0) onPick(index);
    });
  }
  return chart;
}

/**
 * The balance from the ledger (a step each entry), the projection to zero (dashed) and the
 * burn rate per minute on its own axis. Each argument is [[seconds...], [values...]].
 */
export function balanceChart(target, history, projection, burn) {
  const data = uPlot.join([history, projection, burn]);
  return draw(target, {
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: true }, rate: { auto: true } },
    series: [
      { value: utcLegend },
      { label: "balance", stroke: COLORS[0], width: 2, spanGaps: true,
        paths: uPlot.paths.stepped({ align: 1 }), value: (u, v) => credits(v) },
      { label: "projection", stroke: COLORS[1], width: 2, dash: [6, 4], spanGaps: true,
        value: (u, v) => credits(v) },
      { label: "burn rate / min", stroke: COLORS[2], width: 1.5, scale: "rate", spanGaps: true,
        points: { show: false }, value: (u, v) => rate(v) },
    ],
    axes: [
      {},
      { values: (u, ticks) => axisValues(ticks), size: 56 },
      { scale: "rate", side: 1, grid: { show: false }, values: (u, ticks) => axisValues(ticks),
        size: 56 },
    ],
  }, data);
}

/** Lines over time, one per named series: {label: [[seconds...], [values...]]}. */
export function linesChart(target, named) {
  const labels = Object.keys(named);
  const data = uPlot.join(labels.map((label) => named[label]));
  return draw(target, {
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: true } },
    series: [{ value: utcLegend }, ...labels.map((label, i) => ({
      label, stroke: COLORS[(i + 1) % COLORS.length], width: 2, spanGaps: true,
      value: (u, v) => credits(v),
    }))],
    axes: [{}, { values: (u, ticks) => axisValues(ticks), size: 56 }],
  }, data);
}
