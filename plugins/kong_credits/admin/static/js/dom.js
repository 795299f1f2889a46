// A small element builder: text always goes in as text, never as HTML.

/** h("td", {class: "num"}, "12") -> <td class="num">12</td>; children are nodes or text. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

export function append(element, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/** A table: `columns` are [heading, (row) => cell content, className?]. */
export function table(columns, rows, { caption, rowAttributes } = {}) {
  const head = h("tr", {}, columns.map(([title, , cls]) => h("th", { scope: "col", class: cls }, title)));
  const body = rows.map((row) => h("tr", rowAttributes ? rowAttributes(row) : {},
    columns.map(([, cell, cls]) => h("td", { class: cls }, cell(row)))));
  return h("div", { class: "table-wrap" },
    h("table", {}, caption ? h("caption", {}, caption) : null, h("thead", {}, head),
      h("tbody", {}, body)));
}

/** A labelled figure: a card with a big number. */
export function stat(label, value, note, id) {
  return h("div", { class: "stat" }, h("div", { class: "stat-label" }, label),
    h("div", { class: "stat-value", id }, value), note ? h("div", { class: "stat-note" }, note) : null);
}

export function section(title, ...children) {
  return h("section", { class: "panel" }, h("h2", {}, title), ...children);
}
