"""The pipeline as a LangGraph ``StateGraph``: route (understand, recruit) -> ask experts -> aggregate.

A plan of one expert without an escalation is answered inside ``route`` (one super-step, then the end); any other
fans out to ``ask_expert``, one task per expert.
An escalation (``cost`` or ``escalate`` policy) adds a loop: after the first stage's experts answer, ``review``
decides from their answers whether they settle it (they agree, competently enough) or the second stage is asked
(``second_stage``); aggregation then covers every answer received. The nodes are ``nodes.PipelineNodes``'s methods;
this module only wires them.

Runs in: the driver.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from langgraph.graph import END, START, StateGraph

from experts import span
from orchestrator.pipeline.nodes import PipelineNodes
from orchestrator.pipeline.state import PipelineState


def build_graph(nodes: PipelineNodes) -> Any:
    """Wire the nodes (each in a ``moesaic.<node>`` span when tracing is on); returns the compiled graph."""
    graph = StateGraph(PipelineState)
    graph.add_node("route", _traced("route", nodes.route), destinations=("ask_expert", END))  # it returns a Command
    graph.add_node("ask_expert", _traced("ask_expert", nodes.ask_expert))
    graph.add_node("aggregate", _traced("aggregate", nodes.aggregate))
    graph.add_node("review", _traced("review", nodes.review))
    graph.add_edge(START, "route")
    graph.add_conditional_edges("ask_expert", nodes.after_answers, ["review", "aggregate"])
    graph.add_conditional_edges("review", nodes.second_stage, ["ask_expert", "aggregate"])
    graph.add_edge("aggregate", END)
    return graph.compile()


def _traced(name: str, node: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
    """``node`` inside a span named ``moesaic.<name>`` (an expert's task names its expert and stage)."""

    async def run(state: Any) -> Any:
        attributes = {"moesaic.expert": state.get("expert"), "moesaic.stage": state.get("stage")}
        with span(f"moesaic.{name}", attributes):
            return await node(state)

    return run
