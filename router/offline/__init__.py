"""Offline routing work: read labelled outcome tables, profile experts on labelled questions, and evaluate routers.

Runs in: the CLI (``moesaic profile``, ``eval-router``), the server's routing-evaluation worker, benchmarks; never on
a request's path. May import: the live router (``router``), ``aggregator`` (extractors and votes), ``experts.types``.
"""
