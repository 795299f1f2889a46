// Numbers with the viewer's thousands separators, times in the viewer's zone (UTC on hover).

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
const local = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
});

const short = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

/** 1.2M: for chart axes, where the legend shows the exact figure. */
export function compact(value) {
  return value === null || value === undefined ? "" : short.format(value);
}

export function credits(value) {
  return value === null || value === undefined ? "–" : integer.format(value);
}

export function rate(value) {
  return value === null || value === undefined ? "–" : decimal.format(value);
}

/** ISO 8601 UTC as the viewer's local time. */
export function localTime(iso) {
  return iso ? local.format(new Date(iso)) : "–";
}

/** "2026-12-01 21:00:00 UTC": the hover text of every time shown. */
export function utcTime(iso) {
  return iso ? new Date(iso).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC") : "";
}

/** A <time> element: local text, the UTC time in its title and datetime attribute. */
export function timeElement(iso) {
  const element = document.createElement("time");
  element.textContent = localTime(iso);
  if (iso) {
    element.dateTime = iso;
    element.title = utcTime(iso);
  }
  return element;
}

/** How long until `iso`, roughly: "in 3 h", "in 2 d". */
export function fromNow(iso) {
  if (!iso) return "";
  const seconds = (new Date(iso) - Date.now()) / 1000;
  if (seconds <= 0) return "now";
  if (seconds < 3600) return `in ${Math.ceil(seconds / 60)} min`;
  if (seconds < 172800) return `in ${Math.round(seconds / 3600)} h`;
  return `in ${integer.format(Math.round(seconds / 86400))} d`;
}
