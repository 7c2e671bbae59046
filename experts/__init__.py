"""Experts: the LLMs a pool is made of, and everything that runs them.

By process and role:
- ``config/``: pool-file schemas (any process);
- ``runtime/``: the driver side: the pool of actors, guarded calls, and ``runtime/dispatch/`` (queues by expert);
- ``actor/``: inside each expert's Ray actor: queue, batches, the model's time in memory;
- ``backends/``: the ``Backend`` protocol and its implementations (local, litellm, moe; echo for tests);
- ``engine/``: our decoder for Hugging Face models and where weights come from;
- ``vllm/``: local models on vLLM's engine (an engine actor per model, in the engine's own environment);
- ``moe/``: Mixture-of-Experts layers (their "FFN experts" are not pool experts);
- neutral modules shared by both sides: ``types`` (data across the actor boundary), ``errors``, ``_channel`` (the
  same-node socket, both ends), ``_health``, ``_pricing``, ``_tracing``, ``_log_format``, ``_schema_limits`` (how
  large a client's JSON Schema may be, checked at the HTTP edge and again in the actor).

Public surfaces: this module (below), ``experts.types``, ``experts.errors``, ``experts.config``, ``experts.runtime``,
``experts.engine`` (preparing the embedded model ahead of time), ``experts.moe`` (the MoE layers and their options).
A module or folder whose name starts with ``_`` is private to the package that holds it; the actor-side folders
(``actor/``, ``backends/``, ``engine/``, ``vllm/``, ``moe/``) are private to ``experts`` but for their surfaces
(``tests/test_layout.py`` checks both).
"""

from experts._health import ExpertState, HealthReport, is_ready
from experts._log_format import FORMAT_ENV, LEVEL_ENV, LogFormat, configure_logging
from experts._pricing import Price, price_of, unpriced, unpriced_warning
from experts._schema_limits import SchemaLimits, SchemaTooLarge, check_schema
from experts._tracing import configure_from_env as configure_tracing
from experts._tracing import span, traceparent

__all__ = [
    "FORMAT_ENV",
    "LEVEL_ENV",
    "ExpertState",
    "HealthReport",
    "LogFormat",
    "Price",
    "SchemaLimits",
    "SchemaTooLarge",
    "check_schema",
    "configure_logging",
    "configure_tracing",
    "is_ready",
    "price_of",
    "span",
    "traceparent",
    "unpriced",
    "unpriced_warning",
]
