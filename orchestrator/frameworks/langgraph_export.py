"""The pipeline for other people's LangGraph agents: as a subgraph, or as a LangChain tool.

``moesaic_subgraph(orchestrator)`` is a compiled graph over LangGraph's ``MessagesState``: the
conversation in, one ``AIMessage`` with the pool's answer appended. Add it as a node of a graph
whose state has a ``messages`` key and it shares that key. The answer's ``response_metadata``
holds the same ``moesaic`` object the HTTP API returns (routing decision, experts, calls).

``moesaic_tool(orchestrator)`` is an async tool (``ask_moesaic``) for an agent's ``ToolNode``: the
question in, the answer as the tool's content and the ``moesaic`` object as its artifact.

Our own graph runs isolated from the caller's: it is started in a fresh context, so the caller's
run configuration (its checkpointer, its callbacks, its thread) does not flow into it. The
pipeline's internal state is ours; the caller's graph sees only messages.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import uuid
from typing import Any, Literal, Optional

from langchain_core.messages import AIMessage, AnyMessage, BaseMessage
from langchain_core.tools import StructuredTool, ToolException
from langgraph.graph import END, START, MessagesState, StateGraph
from pydantic import BaseModel, Field

from experts.types import GenerationRequest, Message
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.pipeline.state import PipelineRequest, PipelineResult
from orchestrator.pipeline.steps import AllExpertsFailed
from router import NoExpertAvailable, PolicyUnavailable

Strategy = Literal["passthrough", "vote", "synthesize", "rank"]


def moesaic_subgraph(
    orchestrator: Orchestrator,
    *,
    k: int | None = None,
    experts: list[str] | None = None,
    strategy: Strategy | None = None,
    max_tokens: int | None = None,
    name: str = "moesaic",
) -> Any:
    """A compiled graph, messages in and messages out, that answers with the pool.

    ``k``, ``experts`` and ``strategy`` fix the routing for every call (default: the pool's).
    """

    async def answer(state: MessagesState) -> dict[str, list[AnyMessage]]:
        messages = to_moesaic_messages(state["messages"])
        generation = GenerationRequest(messages, max_tokens=max_tokens, request_id=f"graph-{uuid.uuid4().hex}")
        result = await run_isolated(orchestrator, PipelineRequest(generation, k=k, experts=experts, strategy=strategy))
        return {"messages": [answer_message(result, name)]}

    graph = StateGraph(MessagesState)
    graph.add_node("answer", answer)
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    return graph.compile(name=name)


class AskMoesaic(BaseModel):
    """Arguments of the ``ask_moesaic`` tool."""

    question: str = Field(min_length=1, description="the question, self-contained: the pool sees nothing else")
    k: Optional[int] = Field(None, ge=1, le=16, description="how many experts answer (default: the pool's)")
    experts: Optional[list[str]] = Field(None, min_length=1, description="answer with exactly these experts")


def moesaic_tool(
    orchestrator: Orchestrator,
    *,
    name: str = "ask_moesaic",
    description: str | None = None,
    strategy: Strategy | None = None,
    max_tokens: int | None = None,
) -> StructuredTool:
    """An async LangChain tool that asks the pool one question (content: the answer; artifact: ``moesaic``)."""
    pool = orchestrator.pool
    skills = sorted({skill for expert in pool.spec.routable_experts for skill in expert.skills})
    description = description or (
        f"Ask the Moesaic pool {pool.spec.name!r}: several expert models answer and their answers are "
        f"combined into one. Good at: {', '.join(skills) or 'general questions'}."
    )

    async def ask(question: str, k: int | None = None, experts: list[str] | None = None) -> tuple[str, dict]:
        if experts:
            unknown = [expert for expert in experts if expert not in pool.expert_names]
            if unknown:  # a tool error reaches the agent's model as text it can act on
                raise ToolException(f"unknown experts {unknown}; choose among {pool.expert_names}")
        generation = GenerationRequest(
            [Message("user", question)], max_tokens=max_tokens, request_id=f"tool-{uuid.uuid4().hex}"
        )
        request = PipelineRequest(generation, k=k, experts=experts, strategy=strategy)
        try:
            result = await run_isolated(orchestrator, request)
        except (NoExpertAvailable, AllExpertsFailed, PolicyUnavailable) as error:
            raise ToolException(f"the Moesaic pool could not answer: {error}") from None
        return result.text, metadata_of(result)

    return StructuredTool.from_function(
        coroutine=ask,
        name=name,
        description=description,
        args_schema=AskMoesaic,
        response_format="content_and_artifact",
        handle_tool_error=True,  # an unknown expert or a failed pipeline becomes the tool's answer, not a crash
    )


async def run_isolated(orchestrator: Orchestrator, request: PipelineRequest) -> PipelineResult:
    """Run the pipeline in a fresh context, so none of the caller's run configuration leaks into ours."""
    return await asyncio.create_task(orchestrator.run(request), context=contextvars.Context())


def to_moesaic_messages(messages: list[BaseMessage]) -> list[Message]:
    """LangChain messages as the pipeline's turns.

    System, human and AI messages keep their roles. The subgraph asks the pool without tools, so an AI
    message's tool calls become a line saying which tool was called with what, and a tool result
    becomes a user turn naming the tool: the experts see the whole exchange rather than a gap.
    """
    turns: list[Message] = []
    for message in messages:
        text = message.text
        if message.type == "system":
            turns.append(Message("system", text))
        elif message.type == "human":
            turns.append(Message("user", text))
        elif message.type == "ai":
            calls = [
                f"[called {call['name']}({json.dumps(call['args'])})]" for call in getattr(message, "tool_calls", [])
            ]
            turns.append(Message("assistant", "\n".join(filter(None, [text, *calls]))))
        elif message.type == "tool":
            turns.append(Message("user", f"[result of tool {getattr(message, 'name', None) or 'call'}]\n{text}"))
        else:
            raise ValueError(f"cannot pass a {message.type!r} message to the pool; use system, human, ai or tool")
    if not any(turn.role == "user" for turn in turns):
        raise ValueError("the conversation has no human message for the pool to answer")
    return turns


def metadata_of(result: PipelineResult) -> dict[str, Any]:
    """The ``moesaic`` object of the HTTP API for this result."""

    return result.metadata()


def answer_message(result: PipelineResult, name: str = "moesaic") -> AIMessage:
    """The pool's answer as an ``AIMessage`` with usage and the ``moesaic`` routing metadata."""
    usage = result.usage
    return AIMessage(
        content=result.text,
        name=name,
        id=f"moesaic-{uuid.uuid4().hex}",
        response_metadata={
            "model_name": "moesaic",
            "model_provider": "moesaic",
            "finish_reason": result.finish_reason,
            "moesaic": metadata_of(result),
        },
        usage_metadata={
            "input_tokens": usage.prompt_tokens,
            "output_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
    )
