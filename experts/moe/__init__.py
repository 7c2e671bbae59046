"""Mixture-of-Experts layers served by our own routing and expert kernels (CPU reference, Triton on GPU).

Runs in: the ``moe`` backend's actor. May import: torch, triton (on GPU), safetensors; nothing else of Moesaic.
Its surface, ``RoutingOptions`` and ``MoESpec``, is plain data that the driver may name too.

Vocabulary: in this package an "expert" is an **FFN expert** inside one MoE layer of one model, and the "router"
is that layer's gate; a pool's experts (whole models) and Moesaic's router are elsewhere. The path, one job per
module: ``routing`` (gate → top-k ids and weights) → ``align`` (pairs grouped by FFN expert into GEMM blocks) →
``fused`` / ``kernel`` (the grouped GEMMs, Triton) or ``cpu_packed`` / ``reference`` (PyTorch) → ``block`` (the
layer that replaces a model's MoE block), with ``loader`` and ``weights`` bringing a checkpoint's FFN experts into
that layout and ``configs`` the tuned kernel tiles.
"""

from experts.moe.options import RoutingOptions
from experts.moe.spec import MoESpec

__all__ = ["MoESpec", "RoutingOptions"]
