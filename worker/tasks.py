"""Thin Celery tasks: parse the message, call the plain batch code, handle retries and time limits."""

from __future__ import annotations

import logging
import os
import random
from functools import lru_cache

import redis.exceptions
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from cutout_fleet.catalog import load_catalog
from cutout_fleet.connections import redis_client
from cutout_fleet.errors import TransientError
from cutout_fleet.messages import (
    TASK_FINALIZE_JOB,
    TASK_PROCESS_BATCH,
    InvalidMessage,
    TaskMessage,
    parse_message,
)
from cutout_fleet.outcomes import failed
from cutout_fleet.reports import write_report
from cutout_fleet.state import RedisJobStore
from cutout_fleet.storage import Storage, open_storage, parse_location, s3_client
from cutout_fleet.worker.batch import BatchRuntime, fail_remaining, run_batch
from cutout_fleet.worker.celery_app import app, settings
from cutout_fleet.worker.sessions import SessionPool

log = logging.getLogger(__name__)

MAX_TRANSIENT_RETRIES = 8
RETRY_BACKOFF_BASE_S = 2.0
RETRY_BACKOFF_MAX_S = 300.0
# A restarting Redis answers LOADING, a dropped one refuses: both heal, so the task is retried.
REDIS_TRANSIENT = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
)

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
                store=RedisJobStore(redis_client(settings), settings.job_ttl_s),
                sessions=SessionPool(settings, catalog),
                open_storage=storage_for,
                on_job_complete=lambda job_id, queue: finalize_job.apply_async((job_id,), queue=queue),
            ),
        )
    return _runtime[1]


def _backoff_s(retries: int) -> float:
    return min(RETRY_BACKOFF_MAX_S, RETRY_BACKOFF_BASE_S * 2**retries) * random.uniform(0.5, 1.0)


def _queue_of(message: TaskMessage) -> str:
    spec = load_catalog(settings).get(message.options.model)
    return settings.queues.cpu if spec.queue == "cpu" else settings.queues.gpu


def send_again(message: TaskMessage, keys: list[str]) -> None:
    """Queue these keys of a message as a new task, with time limits for their number."""
    again = message.model_copy(update={"keys": keys})
    soft = settings.worker.item_time_limit_s * len(keys)
    process_batch.apply_async(
        args=[again.model_dump(mode="json", exclude_defaults=True)],
        queue=_queue_of(message),
        soft_time_limit=soft,
        time_limit=soft + settings.worker.hard_limit_grace_s,
    )


class BatchTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        """Hard time limit: the pool child was killed mid-key and Celery acked the message.

        Send it again: recorded keys are skipped, and the key that was running has had its attempt
        counted, so a key that always hangs becomes `poison` after CUTOUT_WORKER__MAX_ATTEMPTS.
        """
        if not isinstance(exc, TimeLimitExceeded) or not args:
            return
        try:
            message = parse_message(args[0])
        except InvalidMessage:
            return
        log.warning("task %s hit its hard time limit; sending its %d keys again", task_id, len(message.keys))
        send_again(message, list(message.keys))


@app.task(name=TASK_PROCESS_BATCH, bind=True, base=BatchTask, max_retries=MAX_TRANSIENT_RETRIES)
def process_batch(self: Task, payload: object) -> dict[str, object]:
    try:
        message = parse_message(payload)
    except InvalidMessage as exc:
        log.error("rejected task %s: %s", self.request.id, exc)
        runtime().store.add_rejected(str(self.request.id), str(exc), repr(payload))
        return {"rejected": str(exc)}
    queue = (self.request.delivery_info or {}).get("routing_key") or _queue_of(message)
    rt = runtime()
    try:
        result = run_batch(message, rt, queue)
    except (TransientError, *REDIS_TRANSIENT) as exc:
        if self.request.retries >= MAX_TRANSIENT_RETRIES:
            reason = f"gave up after {self.request.retries} retries: {exc}"
            return {"failed_after_retries": fail_remaining(message, rt, queue, "transient_error", reason)}
        raise self.retry(exc=exc, countdown=_backoff_s(self.request.retries)) from exc
    except SoftTimeLimitExceeded:
        return _on_soft_time_limit(message, rt, queue)
    return dict(result.__dict__)


def _on_soft_time_limit(message: TaskMessage, rt: BatchRuntime, queue: str) -> dict[str, object]:
    """The key that was running fails with `timeout`; the keys after it go out as a new task."""
    pending = [key for key in message.keys if not rt.store.is_recorded(message.job_id, key)]
    if not pending:
        return {"timed_out": 0}
    running, rest = pending[0], pending[1:]
    source_prefix, out_prefix = parse_location(message.source).prefix, parse_location(message.out).prefix
    out_key = message.output_key(running, source_prefix, out_prefix)
    reason = f"{running}: took longer than CUTOUT_WORKER__ITEM_TIME_LIMIT_S allows"
    _, completed = rt.store.record(
        message.job_id, failed(running, out_key, message.options.model, "timeout", reason)
    )
    if completed:
        rt.on_job_complete(message.job_id, queue)
    if rest:
        send_again(message, rest)
    return {"timed_out": 1, "sent_again": len(rest)}


@app.task(name=TASK_FINALIZE_JOB, bind=True, max_retries=MAX_TRANSIENT_RETRIES)
def finalize_job(self: Task, job_id: str) -> dict[str, object]:
    """Write the completion reports once the last item of a job has its outcome."""
    rt = runtime()
    try:
        job = rt.store.get(str(job_id))
        if job is None:
            return {"missing": job_id}
        key = write_report(rt.store, rt.open_storage(job.out), job.job_id)
    except (TransientError, *REDIS_TRANSIENT) as exc:
        raise self.retry(exc=exc, countdown=_backoff_s(self.request.retries)) from exc
    return {"report": key}
