"""Dispatch by expert: per-expert queues, which expert runs next, and which experts stay in memory.

Runs in: the driver. May import: ``experts.runtime.pool``, ``experts.config``, ``experts.types``.

Public surface: ``dispatcher.Dispatcher`` and ``dispatching`` (wrap a pool whose file has a ``residency`` section);
``scheduler`` is the pure policy (an injectable clock), ``residency`` the memory budget's bookkeeping.
"""
