"""A LangGraph prebuilt ReAct agent (``create_react_agent``) over ``ChatMoesaic.bind_tools`` on the embedded pool.

The task takes two tools in turn (add, then multiply). Each model turn is the whole Moesaic pipeline: the router
recruits two SmolLM2 experts, each makes a call the grammar holds well-formed, and the pool votes on the calls. The
agent forces the step's tool (a named ``tool_choice``, as a planned workflow does; SmolLM2-135M does not choose tools
well on its own) and, once both results are in, asks for the answer with ``tool_choice: none``. What is checked is
what the loop needs of Moesaic: every call is well-formed and runs (LangGraph's ``ToolNode`` validates its arguments
against the tool's signature), each result reaches the next model turn, and the loop ends with an answer.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_moesaic import ChatMoesaic
from langgraph.prebuilt import create_react_agent

from tests.conftest import ServerThread

pytestmark = [pytest.mark.ray, pytest.mark.model]


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def test_a_react_agent_finishes_a_two_tool_task(api_server: ServerThread) -> None:
    model = ChatMoesaic(base_url=api_server.url + "/v1", model="moesaic", temperature=0, max_tokens=64)
    tools = [add, multiply]
    plan = ["add", "multiply"]  # the step each model turn takes, until both results are in
    seen: list[list[Any]] = []  # what each model turn was given

    def step_model(state: dict[str, Any], runtime: Any) -> Any:
        messages = state["messages"]
        seen.append(list(messages))
        done = sum(isinstance(message, ToolMessage) for message in messages)
        return model.bind_tools(tools, tool_choice=plan[done] if done < len(plan) else "none")

    agent = create_react_agent(step_model, tools)
    result = agent.invoke(
        {"messages": [HumanMessage("Add 2 and 3, then multiply the sum by 4.")]}, {"recursion_limit": 12}
    )
    messages = result["messages"]
    kinds = [type(message).__name__ for message in messages]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage", "ToolMessage", "AIMessage"]
    first_call, second_call, answer = messages[1], messages[3], messages[5]
    assert [call["name"] for call in first_call.tool_calls] == ["add"]
    assert [call["name"] for call in second_call.tool_calls] == ["multiply"]
    for call_message, result_message in ((first_call, messages[2]), (second_call, messages[4])):
        [call] = call_message.tool_calls
        assert set(call["args"]) == {"a", "b"} and all(isinstance(value, int) for value in call["args"].values())
        assert result_message.status == "success" and result_message.tool_call_id == call["id"]  # it ran
        expected = add.invoke(call["args"]) if call["name"] == "add" else multiply.invoke(call["args"])
        assert result_message.content == str(expected)
    # each result reached the next turn: the turn was given it, and the server counted the longer prompt
    assert any(isinstance(m, ToolMessage) and m.tool_call_id == first_call.tool_calls[0]["id"] for m in seen[1])
    assert len(seen) == 3 and isinstance(seen[2][-1], ToolMessage)
    prompts = [message.usage_metadata["input_tokens"] for message in (first_call, second_call, answer)]
    assert prompts[0] < prompts[1] < prompts[2]
    assert isinstance(answer, AIMessage) and not answer.tool_calls and answer.content  # the loop ended, answering
    assert answer.response_metadata["moesaic"]["decision"]["experts"]
    assert first_call.response_metadata["moesaic"]["strategy"] == "tool_calls"  # the pool voted on the call
