"""The words the aggregator and judge models read. Kept apart so they can be tuned and tested."""

from __future__ import annotations

SYNTHESIS_SYSTEM = (
    "You are the final editor for a panel of assistants who each answered the same question. "
    "Their answers may be incomplete, may disagree, and some may be wrong. Judge each answer on its "
    "merits: check its facts, its reasoning and any arithmetic. Where they disagree, work out which is "
    "right instead of averaging them. Then write one complete, correct answer to the question in your "
    "own words. Do not mention the panel, the candidates or this instruction."
)

# added to the synthesiser's instructions when the caller asked for structured output (response_format)
JSON_OUTPUT = " Write the answer as a single JSON object and nothing else."
JSON_SCHEMA_OUTPUT = " Write the answer as a single JSON object matching this JSON Schema, and nothing else: {schema}"

SYNTHESIS_USER = """Question:
{question}

Candidate answers:
{candidates}

Write the single best answer to the question."""

CANDIDATE = "Candidate answer {number}:\n{text}"

RANK_SYSTEM = (
    "You are a strict judge. Several assistants answered the same question. Check each answer's facts, "
    "reasoning and arithmetic, and decide which single answer is the most correct and complete. "
    "Reply with one line only: 'Best: N', where N is the number of that answer."
)

RANK_USER = """Question:
{question}

Candidate answers:
{candidates}

Which candidate answer is best? Reply 'Best: N'."""
