"""Experts: the LLMs a pool is made of, and everything that runs them.

By process and role:
- ``config/``: pool-file schemas (any process);
- ``runtime/``: the driver side: the pool of actors, guarded calls, and ``runtime/dispatch/`` (queues by expert);
- ``actor/``: inside each expert's Ray actor: queue, batches, the model's time in memory;
- ``backends/``: the ``Backend`` protocol and its implementations (local, litellm, moe; echo for tests);
- ``engine/``: our decoder for Hugging Face models and where weights come from;
- ``moe/``: Mixture-of-Experts layers (their "FFN experts" are not pool experts);
- neutral modules shared by both sides: ``types`` (data across the actor boundary), ``errors``, ``channel`` (the
  same-node socket, both ends), ``pricing``, ``log_format``, ``schema_limits`` (how large a client's JSON Schema may
  be, checked at the HTTP edge and again in the actor).
"""
