"""Thin Celery tasks: parse the message, call the plain batch code, handle retries."""

from __future__ import annotations

import logging
import os
from functools import lru_cache

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from cutout_fleet.errors import TransientError
from cutout_fleet.jobs import RedisJobStore
from cutout_fleet.messages import TASK_FINALIZE_JOB, TASK_PROCESS_BATCH, InvalidMessage, parse_message
from cutout_fleet.reports import write_report
from cutout_fleet.storage import Storage, open_storage, parse_location, s3_client
from cutout_fleet.worker.batch import BatchRuntime, fail_remaining, run_batch
from cutout_fleet.worker.celery_app import app, settings
from cutout_fleet.worker.models.catalog import load_catalog
from cutout_fleet.worker.sessions import SessionPool

log = logging.getLogger(__name__)

MAX_TRANSIENT_RETRIES = 8
RETRY_BACKOFF_BASE_S = 2.0
RETRY_BACKOFF_MAX_S = 300.0

_runtime: tuple[int, BatchRuntime] | None = None


def runtime() -> BatchRuntime:
    """This process's runtime, rebuilt after a fork (clients and sessions are not fork-safe)."""
    global _runtime
    if _runtime is None or _runtime[0] != os.getpid():
        catalog = load_catalog(settings)
        client = s3_client(settings.s3)

        @lru_cache(maxsize=64)
        def storage_for(uri: str) -> Storage:
            return open_storage(parse_location(uri), settings.s3, client)

        _runtime = (
            os.getpid(),
            BatchRuntime(
                settings=settings,
                catalog=catalog,
                store=RedisJobStore.from_url(settings.redis_url, settings.job_ttl_s),
                sessions=SessionPool(settings, catalog),
                open_storage=storage_for,
                on_job_complete=lambda job_id, queue: finalize_job.apply_async((job_id,), queue=queue),
            ),
        )
    return _runtime[1]


def _backoff_s(retries: int) -> float:
    import random

    return min(RETRY_BACKOFF_MAX_S, RETRY_BACKOFF_BASE_S * 2**retries) * random.uniform(0.5, 1.0)


@app.task(name=TASK_PROCESS_BATCH, bind=True, max_retries=MAX_TRANSIENT_RETRIES)
def process_batch(self: Task, payload: object) -> dict[str, object]:
    try:
        message = parse_message(payload)
    except InvalidMessage as exc:
        log.error("rejected task %s: %s", self.request.id, exc)
        return {"rejected": str(exc)}
    queue = (self.request.delivery_info or {}).get("routing_key") or settings.queues.cpu
    rt = runtime()
    try:
        result = run_batch(message, rt, queue)
    except TransientError as exc:
        if self.request.retries >= MAX_TRANSIENT_RETRIES:
            n = fail_remaining(
                message, rt, queue, exc.code, f"gave up after {self.request.retries} retries: {exc}"
            )
            return {"failed_after_retries": n}
        raise self.retry(exc=exc, countdown=_backoff_s(self.request.retries)) from exc
    except SoftTimeLimitExceeded:
        n = fail_remaining(message, rt, queue, "timeout", "the task ran past its time limit")
        return {"timed_out": n}
    return dict(result.__dict__)


@app.task(name=TASK_FINALIZE_JOB, bind=True, max_retries=MAX_TRANSIENT_RETRIES)
def finalize_job(self: Task, job_id: str) -> dict[str, object]:
    """Write the completion report once the last item of a job has its outcome."""
    rt = runtime()
    job = rt.store.get(str(job_id))
    if job is None:
        return {"missing": job_id}
    try:
        key = write_report(rt.store, rt.open_storage(job.out), job.job_id)
    except TransientError as exc:
        raise self.retry(exc=exc, countdown=_backoff_s(self.request.retries)) from exc
    return {"report": key}
