"""Your LangGraph agent, calling Moesaic two ways: as a subgraph node and as a tool.

    .venv/bin/python examples/langgraph_agent.py "What is 12 * 7?" --pool deploy/pools/default.yaml

``build_review_graph`` is a two-step graph of your own: Moesaic's subgraph drafts an answer into
the shared ``messages``, then your ``review`` node reads the draft and the routing metadata that
came with it. ``build_tool_agent`` is a tool-using agent: its planner asks for the
``ask_moesaic`` tool (a real agent's model would decide that; here a plain rule does, so the
example runs without a tool-calling model), LangGraph's ``ToolNode`` runs it, and the planner
answers from the tool's result. ``tests/test_export.py`` runs both over an echo pool.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from orchestrator.frameworks.langgraph_export import moesaic_subgraph, moesaic_tool
from orchestrator.pipeline.orchestrator import Orchestrator


def build_review_graph(orchestrator: Orchestrator) -> Any:
    """START -> moesaic (the pool drafts) -> review (your code checks the draft) -> END."""

    def review(state: MessagesState) -> dict[str, list[AIMessage]]:
        draft = state["messages"][-1]
        routing = draft.response_metadata["moesaic"]["decision"]
        note = f"Reviewed: {len(draft.text.split())} words from experts {', '.join(routing['experts'])}."
        return {"messages": [AIMessage(content=note, name="reviewer")]}

    graph = StateGraph(MessagesState)
    graph.add_node("moesaic", moesaic_subgraph(orchestrator))
    graph.add_node("review", review)
    graph.add_edge(START, "moesaic")
    graph.add_edge("moesaic", "review")
    graph.add_edge("review", END)
    return graph.compile()


def build_tool_agent(orchestrator: Orchestrator) -> Any:
    """A planner that calls the ``ask_moesaic`` tool once, then answers from the tool's result."""
    tool = moesaic_tool(orchestrator)

    def planner(state: MessagesState) -> dict[str, list[AIMessage]]:
        last = state["messages"][-1]
        if isinstance(last, ToolMessage):  # the tool answered: reply with what it said
            return {"messages": [AIMessage(content=f"Moesaic says: {last.text}")]}
        question = last.text
        call = {"name": tool.name, "args": {"question": question}, "id": "call-1", "type": "tool_call"}
        return {"messages": [AIMessage(content="", tool_calls=[call])]}

    def next_step(state: MessagesState) -> str:
        last = state["messages"][-1]
        return "tools" if isinstance(last, AIMessage) and last.tool_calls else END

    graph = StateGraph(MessagesState)
    graph.add_node("planner", planner)
    graph.add_node("tools", ToolNode([tool]))
    graph.add_edge(START, "planner")
    graph.add_conditional_edges("planner", next_step, ["tools", END])
    graph.add_edge("tools", "planner")
    return graph.compile()


async def main(question: str, pool_name: str) -> None:
    from experts.config._pool_spec import load_pool
    from experts.runtime._pool import ExpertPool

    pool = ExpertPool(load_pool(pool_name))
    await pool.start()
    try:
        orchestrator = Orchestrator(pool)
        reviewed = await build_review_graph(orchestrator).ainvoke({"messages": [HumanMessage(question)]})
        draft, review = reviewed["messages"][-2:]
        print(f"subgraph answer: {draft.text}\n{review.text}")
        answered = await build_tool_agent(orchestrator).ainvoke({"messages": [HumanMessage(question)]})
        tool_result = next(m for m in answered["messages"] if isinstance(m, ToolMessage))
        print(f"tool answer: {answered['messages'][-1].text}")
        print(f"tool artifact: experts {tool_result.artifact['decision']['experts']}")
    finally:
        await pool.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question")
    parser.add_argument("--pool", default="default", help="pool file path, or a name in deploy/pools")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.question, arguments.pool))
