"""OpenAI's tool-calling and output-format shapes at the HTTP edge.

``tools``, ``tool_choice`` and ``response_format`` are validated here and passed on to the
experts that can use them (``ExpertSpec.supports_tools``); a function's own fields are kept as
the client sent them (``extra="allow"``), since the model, not us, reads them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from experts.types import ToolCall

FunctionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class FunctionDefinition(BaseModel):
    """A function the model may call: its name, what it does, its JSON-Schema parameters."""

    model_config = ConfigDict(extra="allow")

    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolIn(BaseModel):
    """One entry of ``tools``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionDefinition


class FunctionRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: FunctionName


class NamedToolChoice(BaseModel):
    """``tool_choice`` naming the one function the model must call."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionRef


ToolChoice = Union[Literal["none", "auto", "required"], NamedToolChoice]


class CalledFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: FunctionName
    arguments: str = Field(description="the arguments as JSON text, as the model wrote them")


class ToolCallIn(BaseModel):
    """A tool call an assistant message made earlier in the conversation."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(min_length=1)]
    type: Literal["function"] = "function"
    function: CalledFunction

    def to_call(self) -> ToolCall:
        return ToolCall(id=self.id, name=self.function.name, arguments=self.function.arguments)


class ResponseFormatIn(BaseModel):
    """``response_format``: plain text, any JSON object, or JSON matching a schema."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormatIn:
        if self.type == "json_schema" and not isinstance((self.json_schema or {}).get("schema"), dict):
            raise ValueError(
                "type json_schema needs json_schema.schema, a JSON Schema object "
                '(e.g. {"name": "answer", "schema": {"type": "object", ...}})'
            )
        return self


def tool_calls_body(calls: tuple[ToolCall, ...] | list[ToolCall]) -> list[dict[str, Any]]:
    """Tool calls in OpenAI's response shape (a message's ``tool_calls``)."""
    return [
        {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        for call in calls
    ]


def tool_calls_delta(calls: tuple[ToolCall, ...] | list[ToolCall]) -> dict[str, Any]:
    """A streamed chunk's delta carrying whole tool calls (each with its ``index``)."""
    return {"tool_calls": [{"index": index, **call} for index, call in enumerate(tool_calls_body(calls))]}
