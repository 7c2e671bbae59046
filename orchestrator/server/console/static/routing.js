// Routing: POST /v1/routing/evaluate with an uploaded or pasted outcome table; eval-router's figures and frontier.

import { ApiError, api, clearError, showError } from "./api.js";
import { frontierChart } from "./chart.js";
import { $, el, fmtNumber } from "./dom.js";

let uploaded = null; // {name, format, table} of the chosen file

function formatOf(name) {
  const lower = name.toLowerCase();
  if (lower.endsWith(".parquet")) return "parquet";
  if (lower.endsWith(".jsonl") || lower.endsWith(".json")) return "jsonl";
  return "csv";
}

async function readUpload() {
  const file = $("table-file").files[0];
  if (!file) {
    uploaded = null;
    $("table-file-state").textContent = "";
    return;
  }
  const format = formatOf(file.name);
  let table;
  if (format === "parquet") {
    const bytes = new Uint8Array(await file.arrayBuffer());
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    table = btoa(binary);
  } else {
    table = await file.text();
  }
  uploaded = { name: file.name, format, table };
  $("table-file-state").textContent = file.name + " (" + (file.size / 1024).toFixed(0) + " KiB, " + format + ")";
}

function pastedFormat(text) {
  return text.trimStart().startsWith("{") ? "jsonl" : "csv";
}

async function evaluateRouting(event) {
  event.preventDefault();
  clearError();
  const pasted = $("table-text").value;
  const source = pasted.trim()
    ? { name: "pasted table", format: pastedFormat(pasted), table: pasted }
    : uploaded;
  if (!source) {
    showError(new ApiError(0, "upload an outcome table or paste one first", null));
    return;
  }
  const budgets = $("routing-budgets")
    .value.split(",")
    .map((part) => parseFloat(part))
    .filter((value) => !Number.isNaN(value));
  const body = {
    ...source,
    policy: $("routing-policy").value,
    max_experts: parseInt($("routing-max-experts").value, 10) || 3,
    split: parseFloat($("routing-split").value) || 0.3,
    budgets,
  };
  const pool = $("routing-pool").value.trim();
  if (pool) body.pool = pool;
  const button = $("evaluate");
  button.disabled = true;
  button.textContent = "Evaluating...";
  const results = $("routing-results");
  results.replaceChildren(el("p", { class: "muted" }, "profiling and routing " + source.name + "..."));
  try {
    const response = await api("v1/routing/evaluate", { method: "POST", body: JSON.stringify(body) });
    const evaluation = await response.json();
    results.replaceChildren(
      ...Object.entries(evaluation.benchmarks).map(([name, report]) => renderReport(name, report)),
    );
  } catch (error) {
    results.replaceChildren();
    showError(error);
  } finally {
    button.disabled = false;
    button.textContent = "Evaluate";
  }
}

function renderReport(name, report) {
  const rows = [
    ["router (" + report.vote + " vote)", report.accuracy, report.mean_experts, report.mean_cost],
    ["router (top expert only)", report.top1_accuracy, 1, null],
    ["best single: " + report.best_single_expert, report.best_single_accuracy, 1, report.best_single_cost],
    ["random expert", report.random_accuracy, 1, null],
    ["per-question oracle", report.oracle_accuracy, null, null],
  ];
  const table = el(
    "table",
    { class: "figures" },
    el(
      "thead",
      {},
      el("tr", {}, el("th", {}, "router"), el("th", {}, "accuracy"), el("th", {}, "experts / question"),
        el("th", {}, "cost / question")),
    ),
    el(
      "tbody",
      {},
      rows.map(([label, accuracy, experts, cost]) =>
        el(
          "tr",
          {},
          el("td", {}, label),
          el("td", { class: "num" }, fmtNumber(accuracy, 4)),
          el("td", { class: "num" }, experts === null ? "" : fmtNumber(experts, 2)),
          el("td", { class: "num" }, cost === null ? "" : fmtNumber(cost, 0)),
        ),
      ),
    ),
  );
  const apgr = report.pool_apgr === null ? "-" : report.pool_apgr.toFixed(3);
  return el(
    "div",
    { class: "panel report", dataset: { benchmark: name } },
    el("h2", {}, name + ": policy " + report.policy),
    el(
      "p",
      { class: "muted" },
      report.train_questions + " training and " + report.test_questions + " test questions · " +
        report.experts.length + " models · pool APGR " + apgr + " (0.5 = the random-mix hull, 1 = the oracle)",
    ),
    frontierChart(report),
    table,
  );
}

export function setupRouting() {
  $("table-file").addEventListener("change", () => readUpload().catch(showError));
  $("routing-form").addEventListener("submit", evaluateRouting);
}
