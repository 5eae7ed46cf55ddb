"""This process's collaborators for running batches: created once per process, after fork.

Clients and model sessions are not fork-safe, so a runtime made in the parent is never used in a
child: `current_runtime` rebuilds it when the process id changes.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cutout_fleet.catalog import load_catalog
from cutout_fleet.config.settings import Settings
from cutout_fleet.connections import redis_client
from cutout_fleet.state import RedisJobStore
from cutout_fleet.storage import StorageOpener
from cutout_fleet.worker.batch import BatchRuntime
from cutout_fleet.worker.sessions import SessionPool

# (job_id, queue) -> None: sends the task that writes the job's reports.
JobCompleteHook = Callable[[str, str], None]

_runtime: tuple[int, BatchRuntime] | None = None


def build_runtime(settings: Settings, on_job_complete: JobCompleteHook) -> BatchRuntime:
    catalog = load_catalog(settings)
    return BatchRuntime(
        settings=settings,
        catalog=catalog,
        store=RedisJobStore(redis_client(settings), settings.job_ttl_s),
        sessions=SessionPool(settings, catalog),
        open_storage=StorageOpener(settings.s3),
        on_job_complete=on_job_complete,
    )


def current_runtime(settings: Settings, on_job_complete: JobCompleteHook) -> BatchRuntime:
    """This process's runtime, built on first use and again after a fork."""
    global _runtime
    if _runtime is None or _runtime[0] != os.getpid():
        _runtime = (os.getpid(), build_runtime(settings, on_job_complete))
    return _runtime[1]
