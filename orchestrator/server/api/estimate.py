"""The worst case of a chat request before it runs: how many model calls, tokens and dollars it may take.

The admission holds this against the key's tokens per minute and daily budget (``service/admission.py``), then
settles it with what the calls used. It counts every call the request may make:

* the experts: one for ``expert/<name>``, the named ones for ``moesaic.experts``, else as many as the router may
  recruit (the largest of ``moesaic.k``, the pool's ``routing.k`` and ``routing.max_experts``: escalations and
  adaptive k stay within it), priced as the most expensive routable experts;
* the aggregator's call when more than one expert answers (its prompt holds every expert's answer), priced as
  the pool's most expensive expert (the measured choice may pick any);
* the keyword expert's samples, when the pool has one;
* all of it ``n`` times (each choice is a whole run).

Each call counts its prompt (characters / 4, the tools' schemas included) plus its ``max_tokens``. A failed
expert's replacement is not counted (it runs in the failed call's place).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from experts import Price
from experts.config import ExpertSpec, PoolSpec
from orchestrator.pipeline.ledger import CHARS_PER_TOKEN, PriceLookup
from orchestrator.server.api.schemas import ChatCompletionRequest
from orchestrator.server.service.admission import WorkEstimate
from router import KeywordExtractor

MESSAGE_OVERHEAD_TOKENS = 4  # role and separators of one chat turn


def prompt_tokens(body: ChatCompletionRequest) -> int:
    """The request's prompt in estimated tokens: its messages' text and its tools' schemas."""
    characters = sum(len(message.to_message().content) for message in body.messages)
    if body.tools:
        characters += len(json.dumps([tool.model_dump(exclude_none=True) for tool in body.tools]))
    return characters // CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS * len(body.messages)


def default_max_tokens(spec: PoolSpec) -> int:
    """The token budget a request without ``max_tokens`` gets: the largest of the experts' defaults."""
    return max((expert.generation.max_tokens for expert in spec.experts), default=256)


def price_lookup(prices: Mapping[str, Price]) -> PriceLookup:
    """An expert's (input, output) dollars per 1M tokens, for the ledger's estimates; None when unknown."""

    def lookup(name: str) -> tuple[float, float] | None:
        price = prices.get(name)
        if price is None or price.input_per_1m is None or price.output_per_1m is None:
            return None
        return price.input_per_1m, price.output_per_1m

    return lookup


def estimate_chat(
    body: ChatCompletionRequest, spec: PoolSpec, prices: Mapping[str, Price], expert_prefix: str
) -> WorkEstimate:
    """The most ``body`` can use on ``spec``'s pool (see the module docstring)."""
    prompt = prompt_tokens(body)
    answer = body.token_budget or default_max_tokens(spec)
    cost = _Costs(prices)
    by_name = {expert.name: expert for expert in spec.experts}
    options = body.moesaic
    if body.model.startswith(expert_prefix):
        named = by_name.get(body.model.removeprefix(expert_prefix))
        experts = [named] if named is not None else []
        keywords = 0
    else:
        if options is not None and options.experts:
            experts = [by_name[name] for name in options.experts if name in by_name]
        else:
            bound = max((options.k or 0) if options else 0, spec.routing.k or 0, spec.routing.max_experts)
            experts = sorted(spec.routable_experts, key=cost.output, reverse=True)[:bound]
        keywords = KeywordExtractor([]).samples if spec.roles.keywords else 0
    calls, tokens, usd = (
        len(experts),
        len(experts) * (prompt + answer),
        sum(cost.of(e, prompt, answer) for e in experts),
    )
    if len(experts) > 1:  # the aggregator reads every answer and writes its own
        own = options.aggregator_max_tokens if options else None
        aggregator_answer = own or spec.aggregation.max_tokens or default_max_tokens(spec)
        aggregator_prompt = prompt + len(experts) * answer
        dearest = max(spec.experts, key=cost.output)
        calls, tokens = calls + 1, tokens + aggregator_prompt + aggregator_answer
        usd += cost.of(dearest, aggregator_prompt, aggregator_answer)
    if keywords:
        keyword_expert = by_name.get(spec.roles.keywords or "")
        per_call = KeywordExtractor([]).max_tokens
        calls, tokens = calls + keywords, tokens + keywords * (prompt + per_call)
        if keyword_expert is not None:
            usd += keywords * cost.of(keyword_expert, prompt, per_call)
    return WorkEstimate(calls=body.n * calls, tokens=body.n * tokens, usd=body.n * usd)


class _Costs:
    """Dollars of one call on an expert, from the prices known at start-up (unknown: $0)."""

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self.prices = prices

    def of(self, expert: ExpertSpec, prompt: int, answer: int) -> float:
        price = self.prices.get(expert.name)
        if price is None or price.input_per_1m is None or price.output_per_1m is None:
            return 0.0
        return (prompt * price.input_per_1m + answer * price.output_per_1m) / 1_000_000

    def output(self, expert: ExpertSpec) -> float:
        price = self.prices.get(expert.name)
        return (price.output_per_1m or 0.0) + (price.input_per_1m or 0.0) if price is not None else 0.0
