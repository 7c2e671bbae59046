// The cost-quality frontier as SVG, from /v1/routing/evaluate's figures (nothing is computed here but pixels).

import { el } from "./dom.js";

// The frontier as SVG: single models as grey points, the random-mix hull dotted, the policy's budgets as a line.
export function frontierChart(report) {
  const NS = "http://www.w3.org/2000/svg";
  const width = 640;
  const height = 360;
  const pad = { left: 56, right: 16, top: 16, bottom: 44 };
  const points = report.single_models;
  const frontier = report.frontier;
  const hull = report.hull.filter((p) => p.accuracy !== null);
  const unbudgeted = report.mean_cost === null ? [] : [{ mean_cost: report.mean_cost, accuracy: report.accuracy }];
  const costs = points.map((p) => p.mean_cost).concat(frontier.map((r) => r.mean_cost), unbudgeted.map((u) => u.mean_cost));
  const accs = points.map((p) => p.accuracy).concat(frontier.map((r) => r.accuracy), [report.oracle_accuracy]);
  const [x0, x1] = [0, Math.max(...costs) * 1.05];
  const [y0, y1] = [Math.max(0, Math.min(...accs) - 0.05), Math.min(1, Math.max(...accs) + 0.05)];
  const x = (v) => pad.left + ((v - x0) / (x1 - x0 || 1)) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - ((v - y0) / (y1 - y0 || 1)) * (height - pad.top - pad.bottom);
  const svg = (tag, attrs, text) => {
    const node = document.createElementNS(NS, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" });
  chart.append(svg("title", {}, "cost-quality frontier"));
  for (let i = 0; i <= 5; i++) {
    const vy = y0 + ((y1 - y0) * i) / 5;
    const vx = x0 + ((x1 - x0) * i) / 5;
    chart.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(vy), y2: y(vy), class: "grid" }));
    chart.append(svg("text", { x: pad.left - 6, y: y(vy) + 4, class: "tick", "text-anchor": "end" }, vy.toFixed(2)));
    chart.append(svg("text", { x: x(vx), y: height - pad.bottom + 16, class: "tick", "text-anchor": "middle" },
      vx.toFixed(0)));
  }
  chart.append(svg("text", { x: (width + pad.left) / 2, y: height - 6, class: "axis", "text-anchor": "middle" },
    "mean cost per question"));
  chart.append(svg("text", { x: 14, y: height / 2, class: "axis", "text-anchor": "middle",
    transform: `rotate(-90 14 ${height / 2})` }, "accuracy"));
  chart.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(report.oracle_accuracy),
    y2: y(report.oracle_accuracy), class: "oracle" }));
  chart.append(svg("text", { x: width - pad.right, y: y(report.oracle_accuracy) - 4, class: "tick",
    "text-anchor": "end" }, "per-question oracle"));
  if (hull.length > 1) {
    chart.append(svg("polyline", { points: hull.map((p) => `${x(p.mean_cost)},${y(p.accuracy)}`).join(" "),
      class: "hull" }));
  }
  for (const p of points) {
    const dot = svg("circle", { cx: x(p.mean_cost), cy: y(p.accuracy), r: 4, class: "single" });
    dot.append(svg("title", {}, `${p.label}: accuracy ${p.accuracy.toFixed(3)}, cost ${p.mean_cost.toFixed(0)}`));
    chart.append(dot);
    const right = x(p.mean_cost) > width * 0.7; // labels near the right edge go to the left of their point
    chart.append(svg("text", { x: x(p.mean_cost) + (right ? -6 : 6), y: y(p.accuracy) + 3, class: "label",
      "text-anchor": right ? "end" : "start" }, p.label));
  }
  chart.append(svg("polyline", { points: frontier.map((r) => `${x(r.mean_cost)},${y(r.accuracy)}`).join(" "),
    class: "policy" }));
  for (const r of frontier) {
    const dot = svg("circle", { cx: x(r.mean_cost), cy: y(r.accuracy), r: 5, class: "policy-point" });
    dot.append(svg("title", {}, `budget ${r.budget}x: accuracy ${r.accuracy.toFixed(3)}, cost ${r.mean_cost.toFixed(0)}`));
    chart.append(dot);
  }
  for (const u of unbudgeted) {
    const dot = svg("circle", { cx: x(u.mean_cost), cy: y(u.accuracy), r: 5, class: "unbudgeted" });
    dot.append(svg("title", {}, `no budget: accuracy ${u.accuracy.toFixed(3)}, cost ${u.mean_cost.toFixed(0)}`));
    chart.append(dot);
  }
  const legend = el(
    "p",
    { class: "legend muted" },
    el("span", { class: "key policy" }), " " + report.policy + " policy at budgets " +
      frontier.map((r) => r.budget + "x").join(", ") + "  ",
    el("span", { class: "key single" }), " single models  ",
    el("span", { class: "key hull" }), " random mix of single models (hull)  ",
    el("span", { class: "key unbudgeted" }), " the policy without a budget (the table's first row)",
  );
  return el("figure", {}, chart, legend);
}
