"""A chat completion request as the pipeline's and the experts' requests: the request translator of the chat API.

Runs in: the API server. May import: ``orchestrator.pipeline``, ``experts.types``, the API's request models.
"""

from __future__ import annotations

from experts.errors import ErrorCode
from experts.types import GenerationRequest
from orchestrator.pipeline.ledger import CallLedger
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.pipeline.state import PipelineRequest
from orchestrator.server.api.model_names import PIPELINE_MODEL
from orchestrator.server.api.schemas import ChatCompletionRequest
from orchestrator.server.errors import APIError
from orchestrator.server.observability.context import current_request_id

# expert failures that are the caller's mistake (400, naming the field), not the expert's (502)
CLIENT_ERROR_PARAMS = {
    ErrorCode.CONTEXT_LENGTH_EXCEEDED: "messages",
    ErrorCode.INVALID_MOE_ROUTING: "moesaic.moe_routing",
    ErrorCode.INVALID_RESPONSE_FORMAT: "response_format",
    ErrorCode.INVALID_TOOLS: "tools",
}
# failures of the serving machinery itself (an expert's actor or replica lost, e.g. its node went away): nothing the
# caller or the model did, and gone once Ray replaces it: 503 with Retry-After rather than a 502
REPLACED_CODES = frozenset({ErrorCode.ACTOR_DIED, ErrorCode.ACTOR_UNAVAILABLE})


def policy_of(model: str, orchestrator: Orchestrator) -> str | None:
    """``moesaic`` -> the pool's policy (None); ``moesaic/<policy>`` -> that policy, if the router has it."""
    if model == PIPELINE_MODEL:
        return None
    policy = model.removeprefix(PIPELINE_MODEL + "/")
    if policy not in orchestrator.router.policies:
        available = ", ".join(f"{PIPELINE_MODEL}/{name}" for name in orchestrator.router.policies)
        raise APIError(
            404,
            f"model {model!r} does not exist; this pool's router offers {available}"
            + ("" if len(orchestrator.router.policies) > 1 else " (other policies need routing.profiles)"),
            "not_found_error",
            param="model",
            code="model_not_found",
        )
    return policy


def pipeline_request(
    body: ChatCompletionRequest, orchestrator: Orchestrator, ledger: CallLedger | None = None
) -> PipelineRequest:
    options = body.moesaic
    if options and options.experts:
        unknown = [name for name in options.experts if name not in orchestrator.pool.expert_names]
        if unknown:
            raise APIError(400, f"moesaic.experts names unknown experts: {', '.join(unknown)}", param="moesaic.experts")
    return PipelineRequest(
        generation_of(body),
        k=options.k if options else None,
        experts=options.experts if options else None,
        policy=policy_of(body.model, orchestrator),
        strategy=options.strategy if options else None,
        consensus=options.consensus_share() if options else "pool",
        aggregator_max_tokens=options.aggregator_max_tokens if options else None,
        budget=options.budget if options else None,
        expert_deltas=bool(body.stream and options and options.events),
        ledger=ledger,
    )


def generation_of(body: ChatCompletionRequest) -> GenerationRequest:
    """The model call a chat request asks for, before any expert's defaults are applied."""
    return GenerationRequest(
        messages=[message.to_message() for message in body.messages],
        max_tokens=body.token_budget,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop_list,
        seed=body.seed,
        moe_routing=body.moesaic.moe_routing.to_options() if body.moesaic and body.moesaic.moe_routing else None,
        request_id=current_request_id() or "",  # into every expert call and the actors' logs
        logprobs=body.logprobs_asked,
        parallel_tool_calls=body.parallel_tool_calls,
        **body.passthrough(),  # tools, tool_choice, response_format: for the experts that can use them
    )
