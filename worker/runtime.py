"""This process's collaborators for running batches: created once per process, after fork.

Clients and model sessions are not fork-safe, so nothing made in the parent is used in a child:
`current_runtime` and `current_membership` rebuild when the process id changes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache

from cutout_fleet.catalog import load_catalog
from cutout_fleet.config.settings import Settings, load_settings
from cutout_fleet.connections import redis_client
from cutout_fleet.recovery import SendTask
from cutout_fleet.state import RedisJobStore
from cutout_fleet.state.leases import LeaseBoard
from cutout_fleet.storage import StorageOpener
from cutout_fleet.worker import drain
from cutout_fleet.worker.batch import BatchRuntime
from cutout_fleet.worker.membership import Membership
from cutout_fleet.worker.sessions import SessionPool

# (job_id, queue) -> None: sends the task that writes the job's reports.
JobCompleteHook = Callable[[str, str], None]

_runtime: tuple[int, BatchRuntime] | None = None


@lru_cache(maxsize=1)
def worker_settings() -> Settings:
    """The worker's settings, read once per process (environment, .env, secrets directory), on first
    use and never at import."""
    return load_settings()


_membership: tuple[int, Membership] | None = None


def build_runtime(settings: Settings, on_job_complete: JobCompleteHook) -> BatchRuntime:
    catalog = load_catalog(settings)
    return BatchRuntime(
        settings=settings,
        catalog=catalog,
        store=RedisJobStore(redis_client(settings), settings.job_ttl_s),
        sessions=SessionPool(settings, catalog),
        open_storage=StorageOpener(settings.s3),
        on_job_complete=on_job_complete,
        draining=drain.draining,
    )


def current_runtime(settings: Settings, on_job_complete: JobCompleteHook) -> BatchRuntime:
    """This process's runtime, built on first use and again after a fork."""
    global _runtime
    if _runtime is None or _runtime[0] != os.getpid():
        _runtime = (os.getpid(), build_runtime(settings, on_job_complete))
    return _runtime[1]


def current_membership(settings: Settings, runtime: BatchRuntime, send: SendTask) -> Membership:
    """This process's place in the lease board (its heartbeat starts with `start()`)."""
    global _membership
    if _membership is None or _membership[0] != os.getpid():
        board = LeaseBoard(redis_client(settings), settings.worker.lease_s)
        _membership = (os.getpid(), Membership(board, runtime.store, send))
    return _membership[1]
