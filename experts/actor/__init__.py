"""Inside one expert's Ray actor: its request queue, its batches and its model's time in memory.

Runs in: the expert's Ray actor process. May import: ``experts.backends``, ``experts.config``, ``experts.types``,
``experts._channel`` (the actor's end of the same-node socket), ``experts._log_format``; never the driver side.

Public surface: ``expert_actor.ExpertActor``; inside: ``batcher`` (queue to batches), ``lifecycle`` (load, park,
unload, and what a loaded expert occupies).
"""
