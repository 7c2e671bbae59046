"""Dispatch by expert: per-expert queues, which expert runs next, and which experts stay in memory.

Runs in: the driver. May import: ``experts.runtime._pool``, ``experts.config``, ``experts.types``.

Public surface: ``Dispatcher`` and ``dispatching`` (wrap a pool whose file has a ``residency`` section; its caller
owns it) from ``_dispatcher``; ``scheduler`` is the pure policy (an injectable clock), public so that policies can be
tried without a pool; ``_residency`` is the memory budget's bookkeeping.
"""

from experts.runtime.dispatch._dispatcher import Dispatcher, dispatching

__all__ = ["Dispatcher", "dispatching"]
