"""Mixture-of-Experts layers served by our own routing and expert kernels (CPU reference, Triton on GPU)."""
