// DOM helpers and number formats shared by the views. Text from the server is always set as text, never HTML.

export function $(id) {
  return document.getElementById(id);
}

export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function fmtCost(value) {
  if (value === null || value === undefined) return "-";
  if (value === 0) return "$0";
  return value < 0.01 ? "$" + value.toPrecision(3) : "$" + value.toFixed(4);
}

export function fmtMs(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  return seconds < 1 ? (seconds * 1000).toFixed(0) + " ms" : seconds.toFixed(2) + " s";
}

export function fmtNumber(value, digits) {
  if (value === null || value === undefined || Number.isNaN(value)) return "-";
  return Number(value).toFixed(digits);
}

export function badge(text, kind) {
  return el("span", { class: "badge " + kind }, text);
}
