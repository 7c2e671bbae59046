"""Observability: request ids, structured logs and the service's Prometheus metrics.

Runs in: the serving process. May import: ``orchestrator.pipeline`` (results), ``orchestrator.server.errors``,
``experts`` (health reports, the dispatcher's queues, log format); never ``orchestrator.server.api``.

``context`` carries the request id through one request (middleware, graph nodes, logs);
``logs`` writes JSON (or text) log lines that carry it; ``metrics`` counts what the service
did; ``exposition`` writes Prometheus' text format; ``pool_series`` and ``service_series``
read the pool's and the front door's own counters at scrape time; ``middleware`` ties the
request id, the access log and the request metrics to every HTTP request.
"""
