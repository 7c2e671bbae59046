"""Model runtimes behind one protocol (``Backend``), and the factory that picks one."""

from __future__ import annotations

from experts.backends.base import Backend, BackendError, DeltaSink
from experts.config.pool_spec import ExpertSpec


def create_backend(spec: ExpertSpec) -> Backend:
    """Build the backend an expert's pool entry asks for (heavy imports happen in ``load``)."""
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
