"""The driver side of the experts: what the serving process (or a batch run) uses to call them.

Runs in: the driver (the API server, the CLI, batch mode), never inside an expert actor. May import:
``experts.config``, ``experts.actor`` (only to start actors), ``experts.types``, ``experts.errors``,
``experts.channel``.

Public surface: ``pool.ExpertPool`` (start the actors, call an expert with failover), ``dispatch`` (queues by
expert and on-demand residency in front of a pool); inside: ``guarded`` (one expert's calls with timeout, retries,
breaker), ``retry``, ``breaker``, ``actor_handle`` (one actor, restarted when it dies), ``placement`` (multi-GPU
placement groups).
"""
