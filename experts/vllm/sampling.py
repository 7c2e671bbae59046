"""A persona's request as vLLM takes it: the chat template's prompt and ``SamplingParams``.

Runs in: the engine actor (imports vLLM).

Every field of the request is the caller's after the persona's defaults were filled in (``ExpertActor``):
``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``seed``, ``logprobs``; ``response_format`` becomes vLLM's
structured outputs (a JSON schema, or any JSON object), enforced by vLLM's own grammar backend. Streaming is by deltas
(``RequestOutputKind.DELTA``): each output carries only the text and tokens new since the last.
"""

from __future__ import annotations

import json
from typing import Any


def prompt_of(tokenizer: Any, messages: list[dict[str, str]], tools: list[dict[str, Any]] | None = None) -> str:
    """The conversation through the model's chat template, ready for the assistant's turn (with the offered tools,
    for a template that shows them to the model; others leave them out)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("the model's tokenizer has no chat template; local experts need a chat model")
    return str(tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True))


def sampling_params(
    payload: dict[str, Any], tool_schema: dict[str, Any] | None = None, tool_tag: str | None = None
) -> Any:
    """vLLM's ``SamplingParams`` for one request (``ValueError`` for a format it cannot enforce). ``tool_schema``: a
    forced tool call's schema (``tools.py``), which the answer is held to instead of any ``response_format``;
    ``tool_tag``: the structural tag of calls the model may make (``auto``), likewise."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    structured = None
    response_format = payload.get("response_format") or {}
    kind = response_format.get("type")
    if tool_schema is not None:
        structured = StructuredOutputsParams(json=json.dumps(tool_schema), disable_any_whitespace=True)
    elif tool_tag is not None:
        structured = StructuredOutputsParams(structural_tag=tool_tag)
    elif kind == "json_object":
        structured = StructuredOutputsParams(json_object=True, disable_any_whitespace=True)
    elif kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise ValueError("response_format.json_schema.schema must be a JSON Schema object")
        structured = StructuredOutputsParams(json=json.dumps(schema), disable_any_whitespace=True)
    elif kind not in (None, "text"):
        raise ValueError(f"response_format.type {kind!r} is not text, json_object or json_schema")
    temperature = payload.get("temperature")
    return SamplingParams(
        max_tokens=payload.get("max_tokens"),
        temperature=0.0 if temperature is None else float(temperature),
        top_p=float(payload.get("top_p") or 1.0),
        stop=list(payload.get("stop") or []) or None,
        seed=payload.get("seed"),
        min_tokens=int(payload.get("min_tokens") or 0),  # benchmarks force equal lengths; requests leave it 0
        structured_outputs=structured,
        logprobs=payload.get("logprobs"),  # None: none; k: the sampled token's and the k most likely
        output_kind=RequestOutputKind.DELTA,
    )


def token_logprobs(tokenizer: Any, token_ids: list[int], positions: Any, top: int) -> list[list[Any]]:
    """vLLM's log-probabilities of new tokens as plain data: ``[token, logprob, [[token, logprob], ...]]`` each,
    the candidates most likely first, at most ``top`` of them (vLLM adds the sampled token when it is not among
    them; it is left out of the candidates then, as OpenAI does). Special tokens (the end-of-turn token) are left
    out, as they are of the answer's text, so the tokens spell the text."""
    special = set(tokenizer.all_special_ids)
    rows = []
    for token_id, position in zip(token_ids, positions):
        if token_id in special:
            continue
        chosen = position[token_id]
        candidates = sorted(
            ((tid, entry) for tid, entry in position.items() if entry.rank is not None and entry.rank <= top),
            key=lambda pair: pair[1].rank,
        )
        rows.append(
            [
                _text(tokenizer, token_id, chosen),
                float(chosen.logprob),
                [[_text(tokenizer, tid, entry), float(entry.logprob)] for tid, entry in candidates],
            ]
        )
    return rows


def _text(tokenizer: Any, token_id: int, entry: Any) -> str:
    return str(entry.decoded_token if entry.decoded_token is not None else tokenizer.decode([token_id]))
