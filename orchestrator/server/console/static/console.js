// Moesaic console: three views over the public HTTP API, no framework, no build step.
//   Ask     - a streamed chat completion with moesaic.events: the routing decision, each expert's answer in its
//             own column as it lands, then the aggregated answer with every call's tokens, cost and latency.
//   Pool    - GET /v1/pool every 2 s: state, residency, breaker, queues, restarts, today's tokens and cost.
//   Routing - POST /v1/routing/evaluate: eval-router's cost-quality frontier for an outcome table, as SVG.
// The API key lives in this tab's sessionStorage only. Text from the server is always set as text, never as HTML.
// One ES module per view (ask.js, pool.js, routing.js; chart.js draws the frontier), api.js for the key and the
// calls, dom.js for helpers. This module wires the key form and the tabs.

import { KEY_STORE, apiKey, clearError } from "./api.js";
import { loadAskOptions, setupAsk } from "./ask.js";
import { $ } from "./dom.js";
import { refreshPool, setupPool } from "./pool.js";
import { setupRouting } from "./routing.js";

function keyStateText() {
  $("key-state").textContent = apiKey() ? "key set for this tab" : "no key";
}

function setupKey() {
  $("api-key").value = apiKey();
  keyStateText();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("api-key").value.trim();
    if (value) sessionStorage.setItem(KEY_STORE, value);
    else sessionStorage.removeItem(KEY_STORE);
    keyStateText();
    clearError();
    loadAskOptions();
    if (currentView() === "pool") refreshPool();
  });
  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    $("api-key").value = "";
    keyStateText();
  });
}

// -- views --------------------------------------------------------------------------------------------------------
function currentView() {
  const selected = document.querySelector('#tabs [aria-selected="true"]');
  return selected ? selected.dataset.view : "ask";
}

function show(view) {
  for (const tab of document.querySelectorAll("#tabs button")) {
    tab.setAttribute("aria-selected", String(tab.dataset.view === view));
  }
  for (const section of document.querySelectorAll(".view")) {
    section.hidden = section.id !== "view-" + view;
  }
  if (location.hash !== "#" + view) history.replaceState(null, "", "#" + view);
  if (view === "pool") refreshPool();
}

function setupTabs() {
  for (const tab of document.querySelectorAll("#tabs button")) {
    tab.addEventListener("click", () => show(tab.dataset.view));
  }
  const wanted = location.hash.replace("#", "");
  show(["ask", "pool", "routing"].includes(wanted) ? wanted : "ask");
}

// -- start ------------------------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  setupKey();
  setupAsk();
  setupPool(() => currentView() === "pool");
  setupRouting();
  setupTabs();
});
