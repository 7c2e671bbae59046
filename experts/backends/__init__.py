"""Model runtimes behind one protocol (``Backend``), and the factory that picks one.

Runs in: an expert's Ray actor (built there by ``experts.actor``). May import: ``experts.engine`` (``local``),
``experts.vllm`` (``local`` on a shared vLLM engine),
``experts.moe`` (``moe``), litellm (``litellm``, lazily), ``experts.config``, ``experts.types``,
``experts.errors``; never the driver side (``experts.runtime``).

Public surface: ``Backend`` (the protocol; optional abilities have defaults on the base), ``DeltaSink``,
``BackendError``, ``create_backend``.
"""

from __future__ import annotations

from experts.backends.base import Backend, DeltaSink
from experts.config import ExpertSpec
from experts.errors import BackendError


def create_backend(spec: ExpertSpec, engine_actor: str | None = None, namespace: str | None = None) -> Backend:
    """Build the backend an expert's pool entry asks for (heavy imports happen in ``load``).

    ``engine_actor``: a ``local`` expert the pool put on a shared vLLM engine (``experts.runtime._engines``) gets
    the client of that engine actor instead of our own engine.
    """
    if spec.backend == "local" and engine_actor is not None:
        from experts.vllm.client import VllmBackend

        return VllmBackend(spec, engine_actor, namespace)
    if spec.backend == "local":
        from experts.backends.local import LocalBackend

        return LocalBackend(spec)
    if spec.backend == "moe":
        from experts.backends.moe import MoEBackend

        return MoEBackend(spec)
    if spec.backend == "litellm":
        from experts.backends.litellm_backend import LiteLLMBackend

        return LiteLLMBackend(spec)
    if spec.backend == "echo":
        from experts.backends.echo import EchoBackend

        return EchoBackend(spec)
    raise BackendError(f"expert {spec.name!r}: unknown backend {spec.backend!r}")


__all__ = ["Backend", "BackendError", "DeltaSink", "create_backend"]
