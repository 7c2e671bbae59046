"""The pipeline inside someone else's LangGraph agent: as a subgraph and as a tool (examples/langgraph_agent.py)."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph

from experts.runtime._pool import ExpertPool
from experts.types import Message
from orchestrator.frameworks.langgraph_export import moesaic_subgraph, moesaic_tool, to_moesaic_messages
from orchestrator.pipeline.orchestrator import Orchestrator
from tests.conftest import echo_pool_spec

pytestmark = pytest.mark.ray
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "langgraph_agent.py"


@pytest.fixture(scope="module")
async def echo_orchestrator(ray_session: None) -> AsyncIterator[Orchestrator]:
    pool = ExpertPool(echo_pool_spec("export"))
    await pool.start()
    yield Orchestrator(pool)
    await pool.shutdown()


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("langgraph_agent_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_example_review_graph_uses_the_subgraph(example: ModuleType, echo_orchestrator: Orchestrator) -> None:
    graph = example.build_review_graph(echo_orchestrator)
    state = await graph.ainvoke({"messages": [HumanMessage("Solve the equation 2 x = 8")]})
    question, draft, review = state["messages"]
    assert draft.text == "Solve the equation 2 x = 8"  # the echo expert repeats the question
    assert draft.name == "moesaic"
    assert draft.response_metadata["moesaic"]["decision"]["experts"] == ["a"]  # a math question: expert a
    assert draft.usage_metadata["output_tokens"] == 7
    assert review.text == "Reviewed: 7 words from experts a."


async def test_example_tool_agent_calls_the_tool(example: ModuleType, echo_orchestrator: Orchestrator) -> None:
    graph = example.build_tool_agent(echo_orchestrator)
    state = await graph.ainvoke({"messages": [HumanMessage("Write a short poem")]})
    kinds = [type(message).__name__ for message in state["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    tool_message = state["messages"][2]
    assert tool_message.status == "success"
    assert tool_message.text == "Write a short poem"
    assert tool_message.artifact["decision"]["experts"] == ["b"]  # writing: expert b
    assert state["messages"][-1].text == "Moesaic says: Write a short poem"


async def test_subgraph_under_a_checkpointed_parent(echo_orchestrator: Orchestrator) -> None:
    """The caller's checkpointer and thread stay theirs: two turns on one thread keep the history."""
    parent = StateGraph(MessagesState)
    parent.add_node("moesaic", moesaic_subgraph(echo_orchestrator, experts=["a", "b"], strategy="vote"))
    parent.add_edge(START, "moesaic")
    graph = parent.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t1"}}
    await graph.ainvoke({"messages": [HumanMessage("first question")]}, config)
    state = await graph.ainvoke({"messages": [HumanMessage("second question")]}, config)
    texts = [message.text for message in state["messages"]]
    assert texts == ["first question", "first question", "second question", "second question"]
    assert state["messages"][-1].response_metadata["moesaic"]["strategy"] == "vote"


async def test_tool_reports_unknown_experts_as_a_tool_error(echo_orchestrator: Orchestrator) -> None:
    tool = moesaic_tool(echo_orchestrator)
    call = {"name": tool.name, "args": {"question": "hi", "experts": ["nobody"]}, "id": "c1", "type": "tool_call"}
    message = await tool.ainvoke(call)
    assert isinstance(message, ToolMessage)
    assert message.status == "error"
    assert "nobody" in message.text
    assert set(tool.args) == {"question", "k", "experts"}


def test_message_conversion_keeps_tool_exchanges_as_text() -> None:
    call = {"name": "lookup", "args": {"q": "rain"}, "id": "c1", "type": "tool_call"}
    turns = to_moesaic_messages(
        [
            SystemMessage("be brief"),
            HumanMessage("will it rain?"),
            AIMessage(content="", tool_calls=[call]),
            ToolMessage("80% chance", tool_call_id="c1", name="lookup"),
        ]
    )
    assert turns == [
        Message("system", "be brief"),
        Message("user", "will it rain?"),
        Message("assistant", '[called lookup({"q": "rain"})]'),
        Message("user", "[result of tool lookup]\n80% chance"),
    ]
    with pytest.raises(ValueError, match="no human message"):
        to_moesaic_messages([SystemMessage("only a system prompt")])


@pytest.mark.cluster  # the script starts a Ray instance of its own
def test_example_runs_as_documented(tmp_path: Path) -> None:
    """The command in the example's docstring, over an echo pool file."""
    import subprocess
    import sys

    import yaml

    pool_file = tmp_path / "echo.yaml"
    pool_file.write_text(yaml.safe_dump(echo_pool_spec("example").model_dump(mode="json")), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "Write a short poem", "--pool", str(pool_file)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "subgraph answer: Write a short poem",
        "Reviewed: 4 words from experts b.",
        "tool answer: Moesaic says: Write a short poem",
        "tool artifact: experts ['b']",
    ]
