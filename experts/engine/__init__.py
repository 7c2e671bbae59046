"""Our decoder for Hugging Face causal LMs (the ``local`` backend's engine) and where model weights come from.

Runs in: an expert actor (``embedded`` also in the CLI, to prepare weights ahead of time). May import: torch,
transformers, xgrammar, ``experts.types``, ``experts.errors``, ``experts._schema_limits``.

Public surface for other packages: ``prepare_model`` (``moesaic prepare``). Inside the actor:
``continuous.ContinuousEngine`` (the default: requests join a running decode loop over a preallocated
``slot_cache``), ``static.BatchDecoder`` (one batch at a time), ``decoding`` (sampling, stops and streaming shared by
both), ``grammar`` (``response_format`` as a grammar: schema limits, a bounded cache of compiled grammars, a compile
timeout), ``embedded`` (find weights on disk; dequantise GGUF once and cache it).
"""

from experts.engine.embedded import prepare_model

__all__ = ["prepare_model"]
