"""Service hardening: the Redis-backed stores (response cache, rate limits, request journal) with
in-process fallbacks, and the pieces that wire them into the HTTP app."""
