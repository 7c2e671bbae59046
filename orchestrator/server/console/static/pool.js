// Pool: GET /v1/pool every 2 s while the view is shown (and /readyz for the badge).

import { api, showError } from "./api.js";
import { $, badge, el, fmtCost } from "./dom.js";

export async function refreshPool() {
  try {
    const [view, ready] = await Promise.all([
      api("v1/pool").then((r) => r.json()),
      fetch("readyz").then((r) => r.ok),
    ]);
    $("pool-name").textContent = "pool " + view.pool;
    const readyBadge = $("pool-ready");
    readyBadge.textContent = ready ? "ready" : "not ready";
    readyBadge.className = "badge " + (ready ? "good" : "bad");
    $("pool-updated").textContent = "updated " + new Date().toLocaleTimeString();
    $("pool-note").textContent =
      "today = since 00:00 UTC " + view.day + " in this server process; state, breaker and queues are live.";
    const rows = view.experts.map((e) => {
      const state = badge(e.state, e.state === "ready" ? "good" : e.state === "failed" ? "bad" : "warn");
      const breaker = badge(e.breaker, e.breaker === "closed" ? "good" : e.breaker === "open" ? "bad" : "warn");
      const queue = e.dispatch_queue_depth === null ? e.queue_depth : e.queue_depth + " + " + e.dispatch_queue_depth;
      return el(
        "tr",
        { dataset: { expert: e.name }, class: e.healthy ? "" : "unhealthy" },
        el("td", {}, e.name, e.routable ? null : el("span", { class: "muted" }, " (not routed)")),
        el("td", {}, e.backend),
        el("td", {}, e.model),
        el("td", { class: "state" }, state),
        el("td", {}, e.residency || "-"),
        el("td", { class: "serving" }, serving(e)),
        el("td", { class: "breaker" }, breaker),
        el("td", { class: "num" }, queue),
        el("td", { class: "num" }, e.restarts),
        el("td", { class: "num" }, e.today.prompt_tokens + " / " + e.today.completion_tokens),
        el("td", { class: "num" }, fmtCost(e.today.cost)),
        el("td", { class: "num" }, e.today.calls),
        el("td", { class: "num failed-today" }, e.today.failed_calls),
        el("td", { class: "error-text" }, e.error || ""),
      );
    });
    $("pool-table").querySelector("tbody").replaceChildren(...rows);
  } catch (error) {
    showError(error);
  }
}

// What serves the expert: its Ray Serve replicas (ready / all), or its hosted deployments (role, cooling down).
function serving(e) {
  if (e.replicas) {
    const ready = e.replicas.filter((r) => r.state === "ready").length;
    return ready + " / " + e.replicas.length + " replicas";
  }
  if (e.deployments) {
    return e.deployments
      .map((d) => d.name + (d.role === "primary" ? "" : " (" + d.role + ")") + (d.cooling_down ? " cooling down" : ""))
      .join(", ");
  }
  return "-";
}

// `shown`: whether the pool view is the one on screen
export function setupPool(shown) {
  setInterval(() => {
    if (shown() && $("pool-live").checked && !document.hidden) refreshPool();
  }, 2000);
}
