// Ask: a streamed chat completion with moesaic.events: the routing decision, a column per expert as answers land,
// then the aggregated answer with every call's tokens, cost and latency.

import { ApiError, api, clearError, showError } from "./api.js";
import { $, badge, el, fmtCost, fmtMs, fmtNumber } from "./dom.js";

const PIPELINE_MODEL = "moesaic";
// "every expert": ask each routable expert (moesaic.experts) and show beside it what the router would have chosen
// (POST /v1/route); the other options route with the pool's default policy or a named one (moesaic/<policy>).
const EVERY_EXPERT = "every-expert";
const MAX_NAMED_EXPERTS = 16; // the API's limit on moesaic.experts
let routableExperts = [];

export async function loadAskOptions() {
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
  column.classList.remove("pending", "writing");
  column.classList.toggle("failed", Boolean(event.error));
  const text = column.querySelector(".answer-text");
  text.textContent = event.error ? "failed: " + event.error : event.text;
  const call = event.call;
  column.querySelector(".call").textContent =
    call.prompt_tokens + " + " + call.completion_tokens + " tokens · " + fmtCost(call.cost) + " · " +
    fmtMs(call.latency_s) + " · " + (event.finish_reason || call.finish_reason);
}

// A piece of an expert's own answer as it writes it; its `answer` event then sets the whole text.
function renderExpertDelta(event) {
  const column = expertColumn(event.expert, 1);
  const text = column.querySelector(".answer-text");
  if (column.classList.contains("pending")) {
    column.classList.replace("pending", "writing");
    text.textContent = "";
  }
  text.textContent += event.text;
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
      else if (meta && meta.event === "expert_delta") renderExpertDelta(meta);
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

export function setupAsk() {
  $("ask-form").addEventListener("submit", ask);
  $("policy").addEventListener("change", toggleOptions);
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("ask-form").requestSubmit();
  });
  loadAskOptions();
}
