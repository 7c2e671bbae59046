"""The model names the API answers to: the pipeline (``moesaic``, ``moesaic/<policy>``) and one expert
(``expert/<name>``)."""

from __future__ import annotations

PIPELINE_MODEL = "moesaic"
EXPERT_PREFIX = "expert/"


def expert_model(name: str) -> str:
    """The model name of one expert, as keys' model patterns and ``GET /v1/models`` write it."""
    return EXPERT_PREFIX + name
