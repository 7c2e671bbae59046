// Moesaic console: three views over the public HTTP API, no framework, no build step.
//   Ask     - a streamed chat completion with moesaic.events: the routing decision, each expert's answer in its
//             own column as it lands, then the aggregated answer with every call's tokens, cost and latency.
//   Pool    - GET /v1/pool every 2 s: state, residency, breaker, queues, restarts, today's tokens and cost.
//   Routing - POST /v1/routing/evaluate: eval-router's cost-quality frontier for an outcome table, as SVG.
// The API key lives in this tab's sessionStorage only. Text from the server is always set as text, never as HTML.
"use strict";

const KEY_STORE = "moesaic.console.key";
const PIPELINE_MODEL = "moesaic";

// -- small DOM helpers ------------------------------------------------------------------------------------------
function $(id) {
  return document.getElementById(id);
}

function el(tag, attrs, ...children) {
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

function fmtCost(value) {
  if (value === null || value === undefined) return "-";
  if (value === 0) return "$0";
  return value < 0.01 ? "$" + value.toPrecision(3) : "$" + value.toFixed(4);
}

function fmtMs(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  return seconds < 1 ? (seconds * 1000).toFixed(0) + " ms" : seconds.toFixed(2) + " s";
}

function fmtNumber(value, digits) {
  if (value === null || value === undefined || Number.isNaN(value)) return "-";
  return Number(value).toFixed(digits);
}

// -- the API, with the key and OpenAI-shaped errors ---------------------------------------------------------------
class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

async function api(path, init) {
  const headers = { Accept: "application/json" };
  if (init && init.body) headers["Content-Type"] = "application/json";
  const key = apiKey();
  if (key) headers.Authorization = "Bearer " + key;
  let response;
  try {
    response = await fetch(path, { ...(init || {}), headers });
  } catch (error) {
    throw new ApiError(0, "the server cannot be reached (" + error.message + ")", "unreachable");
  }
  if (!response.ok) {
    let message = response.statusText;
    let code = null;
    try {
      const body = await response.json();
      if (body && body.error) {
        message = body.error.message || message;
        code = body.error.code || null;
      }
    } catch (_) {
      // not JSON: keep the status text
    }
    throw new ApiError(response.status, message, code);
  }
  return response;
}

function showError(error) {
  const banner = $("banner");
  banner.replaceChildren();
  let hint = "";
  if (error.status === 401) hint = " Enter a valid API key above and press Use.";
  else if (error.status === 403) hint = " This key may not use that model or endpoint.";
  else if (error.status === 429) hint = " Wait a moment, or raise the key's limits.";
  const status = error.status ? error.status + ": " : "";
  banner.append(el("strong", {}, status), error.message + hint);
  banner.className = "error";
  banner.hidden = false;
}

function clearError() {
  $("banner").hidden = true;
}

// -- the API key --------------------------------------------------------------------------------------------------
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

// -- Ask ----------------------------------------------------------------------------------------------------------
// "every expert": ask each routable expert (moesaic.experts) and show beside it what the router would have chosen
// (POST /v1/route); the other options route with the pool's default policy or a named one (moesaic/<policy>).
const EVERY_EXPERT = "every-expert";
const MAX_NAMED_EXPERTS = 16; // the API's limit on moesaic.experts
let routableExperts = [];

async function loadAskOptions() {
  try {
    const [models, pool] = await Promise.all([
      api("v1/models").then((r) => r.json()),
      api("v1/pool").then((r) => r.json()),
    ]);
    routableExperts = pool.experts.filter((e) => e.routable).map((e) => e.name);
    const select = $("policy");
    const previous = select.value;
    select.replaceChildren();
    if (routableExperts.length > 1 && routableExperts.length <= MAX_NAMED_EXPERTS) {
      select.append(el("option", { value: EVERY_EXPERT }, "every expert, side by side"));
    }
    select.append(el("option", { value: PIPELINE_MODEL }, "routed: pool default"));
    for (const card of models.data) {
      if (card.id.startsWith(PIPELINE_MODEL + "/")) {
        select.append(el("option", { value: card.id }, "routed: " + card.id.slice(PIPELINE_MODEL.length + 1)));
      }
    }
    if ([...select.options].some((o) => o.value === previous)) select.value = previous;
    const k = $("k");
    k.max = String(Math.max(1, routableExperts.length));
    toggleOptions();
  } catch (error) {
    showError(error);
  }
}

function toggleOptions() {
  const policy = $("policy").value;
  $("budget").disabled = !(policy.endsWith("/cost") || policy.endsWith("/escalate"));
  $("k").disabled = policy === EVERY_EXPERT;
}

function expertColumn(name, stage) {
  let column = document.querySelector(`#columns [data-expert="${CSS.escape(name)}"]`);
  if (column) return column;
  column = el(
    "article",
    { class: "column pending", dataset: { expert: name, stage: String(stage) } },
    el("h3", {}, name, stage > 1 ? el("span", { class: "badge" }, "stage " + stage) : null),
    el("div", { class: "answer-text" }, "waiting for the answer..."),
    el("div", { class: "call muted" }),
  );
  $("columns").append(column);
  return column;
}

// The router's decision; `applied` false: it is what the router would choose, shown beside every expert's answer.
function renderDecision(decision, applied) {
  const panel = $("decision");
  const skills = Object.entries(decision.skills || {});
  const chips = skills.length
    ? skills.map(([skill, need]) => el("span", { class: "chip" }, skill + " " + need.toFixed(2)))
    : [el("span", { class: "muted" }, "no skill found" + (decision.fallback ? ": the generalist answers" : ""))];
  const competence = decision.competence || {};
  const hasCompetence = Object.keys(competence).length > 0;
  const rows = decision.scores.map((score) =>
    el(
      "tr",
      { class: score.chosen ? "chosen" : "" },
      el("td", {}, score.name),
      el("td", { class: "num" }, fmtNumber(score.score, 3)),
      hasCompetence ? el("td", { class: "num" }, fmtNumber(competence[score.name], 3)) : null,
      el("td", {}, score.chosen ? "yes" : ""),
      el("td", {}, score.reason),
    ),
  );
  const head = el(
    "tr",
    {},
    el("th", {}, "expert"),
    el("th", {}, "score"),
    hasCompetence ? el("th", {}, "est. competence") : null,
    el("th", {}, "chosen"),
    el("th", {}, "why"),
  );
  const aggregator = decision.aggregator ? ", aggregator " + decision.aggregator : "";
  const title = applied ? "Routing decision" : "Routing decision (not applied: every expert is asked)";
  const picked = applied ? " expert(s)" : " expert(s) would be chosen";
  panel.replaceChildren(
    el("h2", {}, title),
    el(
      "p",
      {},
      "policy " + decision.policy + ", " + decision.k + picked + aggregator + " · skills: ",
      ...chips,
      el("span", { class: "muted" }, " · " + decision.elapsed_ms.toFixed(2) + " ms"),
    ),
    el("table", { class: "figures" }, el("thead", {}, head), el("tbody", {}, rows)),
  );
  if (decision.escalation) {
    panel.append(
      el(
        "p",
        { class: "muted" },
        "second stage: " + decision.escalation.then.join(", ") + ", asked if the first stage disagrees",
      ),
    );
  }
  panel.hidden = false;
  if (applied) decision.experts.forEach((name) => expertColumn(name, 1));
}

function renderAnswer(event) {
  const column = expertColumn(event.expert, event.call.stage || 1);
  column.classList.remove("pending");
  column.classList.toggle("failed", Boolean(event.error));
  const text = column.querySelector(".answer-text");
  text.textContent = event.error ? "failed: " + event.error : event.text;
  const call = event.call;
  column.querySelector(".call").textContent =
    call.prompt_tokens + " + " + call.completion_tokens + " tokens · " + fmtCost(call.cost) + " · " +
    fmtMs(call.latency_s) + " · " + (event.finish_reason || call.finish_reason);
}

function renderEscalation(escalation) {
  const panel = $("escalation");
  const verdict = escalation.escalated
    ? "escalated to " + escalation.then.join(", ")
    : "first stage kept (no escalation)";
  panel.replaceChildren(el("strong", {}, verdict), " - " + escalation.reason);
  panel.className = "panel " + (escalation.escalated ? "escalated" : "");
  panel.hidden = false;
  if (escalation.escalated) escalation.then.forEach((name) => expertColumn(name, 2));
}

function renderFinal(meta, clientSeconds) {
  const kind = $("final-kind");
  if (meta.shortcut) kind.textContent = "consensus short-cut";
  else kind.textContent = meta.strategy;
  kind.className = "badge " + (meta.shortcut ? "shortcut" : "");
  const agg = meta.aggregation || {};
  const aggregator = meta.decision && meta.decision.aggregator;
  const parts = ["strategy " + meta.strategy + (aggregator && !meta.shortcut ? " by " + aggregator : "")];
  if (agg.agreement !== null && agg.agreement !== undefined) parts.push("agreement " + fmtNumber(agg.agreement, 2));
  if (agg.chosen_expert) parts.push("answer from " + agg.chosen_expert);
  if (meta.partial) parts.push("partial: " + (meta.failed_experts || []).join(", ") + " failed");
  const total = meta.timings_ms && meta.timings_ms.total;
  $("final-summary").replaceChildren(
    el(
      "p",
      {},
      el("strong", { id: "total-cost" }, "cost " + fmtCost(meta.cost)),
      " · server " + (total !== undefined ? (total / 1000).toFixed(2) + " s" : "-") +
        " · in the browser " + clientSeconds.toFixed(2) + " s · " + parts.join(" · "),
    ),
  );
  if (meta.note) $("final-summary").append(el("p", { class: "muted" }, meta.note));
  const body = $("calls").querySelector("tbody");
  body.replaceChildren(
    ...meta.calls.map((call) =>
      el(
        "tr",
        { class: call.error ? "failed" : "" },
        el("td", {}, call.expert),
        el("td", {}, call.role),
        el("td", { class: "num" }, call.stage),
        el("td", { class: "num" }, call.prompt_tokens),
        el("td", { class: "num" }, call.completion_tokens),
        el("td", { class: "num" }, fmtCost(call.cost)),
        el("td", { class: "num" }, fmtMs(call.latency_s)),
        el("td", {}, call.error ? "error: " + call.error : call.finish_reason),
      ),
    ),
  );
  $("calls").hidden = false;
}

function resetAsk() {
  for (const id of ["decision", "escalation", "final"]) $(id).hidden = true;
  $("columns").replaceChildren();
  $("final-text").textContent = "";
  $("final-summary").replaceChildren();
  $("calls").hidden = true;
  $("final-kind").textContent = "";
}

// Server-sent events from a fetch body: yields each `data:` payload (comments such as keep-alives are skipped).
async function* sseData(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data) yield data;
    }
  }
}

async function ask(event) {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt) return;
  clearError();
  resetAsk();
  const options = { events: true };
  const everyExpert = $("policy").value === EVERY_EXPERT;
  const k = parseInt($("k").value, 10);
  if (!everyExpert && k > 0) options.k = k;
  const budget = parseFloat($("budget").value);
  if (!$("budget").disabled && budget > 0) options.budget = budget;
  if (everyExpert) options.experts = routableExperts;
  const body = {
    model: everyExpert ? PIPELINE_MODEL : $("policy").value || PIPELINE_MODEL,
    messages: [{ role: "user", content: prompt }],
    stream: true,
    stream_options: { include_usage: true },
    moesaic: options,
  };
  const maxTokens = parseInt($("max-tokens").value, 10);
  if (maxTokens > 0) body.max_tokens = maxTokens;
  const send = $("send");
  send.disabled = true;
  send.textContent = "Working...";
  const started = performance.now();
  const finalText = $("final-text");
  try {
    if (everyExpert) {
      const route = await api("v1/route", { method: "POST", body: JSON.stringify({ model: PIPELINE_MODEL, query: prompt }) });
      const decision = (await route.json()).decision;
      renderDecision(decision, false);
      for (const name of routableExperts) {
        const column = expertColumn(name, 1);
        if (decision.experts.includes(name)) column.querySelector("h3").append(badge("router's pick", "pick"));
      }
    }
    const response = await api("v1/chat/completions", { method: "POST", body: JSON.stringify(body) });
    for await (const data of sseData(response)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ApiError(chunk.error.status || 0, chunk.error.message, chunk.error.code);
      const meta = chunk.moesaic;
      if (meta && meta.event === "decision" && !everyExpert) renderDecision(meta.decision, true);
      else if (meta && meta.event === "answer") renderAnswer(meta);
      else if (meta && meta.event === "escalation") renderEscalation(meta.escalation);
      for (const choice of chunk.choices || []) {
        if (choice.delta && choice.delta.content) {
          $("final").hidden = false;
          finalText.textContent += choice.delta.content;
        }
      }
      if (meta && !meta.event && meta.calls) {
        $("final").hidden = false;
        renderFinal(meta, (performance.now() - started) / 1000);
      }
      if (chunk.usage) {
        const usage = chunk.usage;
        $("final-summary").append(
          el(
            "p",
            { class: "muted" },
            "usage: " + usage.prompt_tokens + " prompt + " + usage.completion_tokens + " completion tokens",
          ),
        );
      }
    }
  } catch (error) {
    showError(error);
  } finally {
    send.disabled = false;
    send.textContent = "Send";
  }
}

function setupAsk() {
  $("ask-form").addEventListener("submit", ask);
  $("policy").addEventListener("change", toggleOptions);
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("ask-form").requestSubmit();
  });
  loadAskOptions();
}

// -- Pool ---------------------------------------------------------------------------------------------------------
function badge(text, kind) {
  return el("span", { class: "badge " + kind }, text);
}

async function refreshPool() {
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

function setupPool() {
  setInterval(() => {
    if (currentView() === "pool" && $("pool-live").checked && !document.hidden) refreshPool();
  }, 2000);
}

// -- Routing ------------------------------------------------------------------------------------------------------
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

// The frontier as SVG: single models as grey points, the random-mix hull dotted, the policy's budgets as a line.
function frontierChart(report) {
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

function setupRouting() {
  $("table-file").addEventListener("change", () => readUpload().catch(showError));
  $("routing-form").addEventListener("submit", evaluateRouting);
}

// -- start --------------------------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  setupKey();
  setupAsk();
  setupPool();
  setupRouting();
  setupTabs();
});
