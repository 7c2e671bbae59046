"""Experts: pool files, model backends, the batching actor and the pool of Ray actors."""
