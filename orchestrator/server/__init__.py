"""The HTTP service: the OpenAI-compatible API, its gate (keys, limits, cache, journal) and its observability.

Runs in: the serving process (``moesaic serve``, a Ray Serve replica). May import: ``orchestrator.pipeline``,
``router``, ``aggregator``, ``experts``.

Public surface: ``api.create_app``, ``settings`` (which pool, which Ray, where to listen), ``errors.APIError`` (the
one OpenAI-shaped error every layer raises); inside: ``service/`` (stores behind the gate), ``observability/``.
"""
