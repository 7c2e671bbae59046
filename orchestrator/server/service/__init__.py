"""Service hardening: the Redis-backed stores (response cache, rate limits, request journal) with
in-process fallbacks, and the pieces that wire them into the HTTP app.

Runs in: the serving process. May import: redis, ``orchestrator.server.errors``, ``experts.config``; never
``orchestrator.server.api`` (the app imports the stores, not the other way round).
"""
