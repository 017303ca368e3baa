// Building the page without a framework: elements from tag, attributes and children; small formatters.

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  append(element, children);
  return element;
}

export function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function replace(element, ...children) {
  element.replaceChildren();
  return append(element, children);
}

// A content field as the API or a stream shows it: text, or a marker object for sealed or withheld text.
export function text(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "string") return value;
  if (value.withheld) return `(not stored: ${value.withheld})`;
  return "(sealed)";
}

export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toISOString().replace("T", " ").slice(0, 19) + "Z";
}

export function ago(iso) {
  const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (!Number.isFinite(seconds)) return "";
  if (seconds < 60) return `${Math.max(seconds, 0)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

export function micros(amount, currency = "") {
  if (amount === null || amount === undefined) return "";
  const units = Number(amount) / 1e6;
  return `${units.toLocaleString("en", {minimumFractionDigits: 2, maximumFractionDigits: 6})}${currency ? " " + currency : ""}`;
}

export function short(hash, length = 12) {
  return hash ? `${hash.slice(0, length)}…` : "";
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

export function mark(name) {
  if (!performance.getEntriesByName(name).length) performance.mark(name);
}

// Name each cell by its column, for the stacked layout of narrow screens (console.css, .stack).
export function labelled(table) {
  const names = [...table.querySelectorAll("thead th")].map((th) => th.textContent);
  for (const row of table.querySelectorAll("tbody tr")) {
    [...row.children].forEach((cell, i) => { if (names[i]) cell.dataset.label = names[i]; });
  }
  return table;
}
