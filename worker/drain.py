"""Warm shutdown hands back what was not started.

The flag is a multiprocessing Event made in the worker's main process before the pool forks, so
every pool process (also those forked later) shares it.  The main process sets it when Celery
begins a warm shutdown (SIGTERM: a pod scaled down); a pool process checks it before each item and
sends the items it has not started back to the queue instead of working through its whole task.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Event

_draining: Event | None = None


def prepare() -> None:
    """In the main process, before the pool starts."""
    global _draining
    if _draining is None:
        _draining = multiprocessing.get_context("fork").Event()


def begin() -> None:
    """In the main process, when a warm shutdown begins."""
    if _draining is not None:
        _draining.set()


def draining() -> bool:
    return _draining is not None and _draining.is_set()
