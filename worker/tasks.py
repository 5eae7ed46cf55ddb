"""Thin Celery tasks: parse the message, run the batch, hand what must run again back to Celery.

Retries use Celery's own machinery and settings (`max_retries`, `retry_backoff`, `retry_jitter`):
`autoretry_for` where the unit is the whole task (the report task), and `Task.retry` with Celery's
backoff formula where it is the item: a batch's retry carries only the items that failed
transiently, so it never redoes a neighbour's work.  When the tries run out, those items (and only
those) fail with `transient_error`.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.exceptions
from celery import Task
from celery.exceptions import Retry
from celery.utils.time import get_exponential_backoff_interval

from cutout_fleet.errors import TransientError
from cutout_fleet.messages import (
    TASK_FINALIZE_JOB,
    TASK_PROCESS_BATCH,
    InvalidMessage,
    NewerMessage,
    TaskMessage,
    parse_message,
    readable_parts,
)
from cutout_fleet.notify import notify_job
from cutout_fleet.reports import write_report
from cutout_fleet.routing import queue_for_model, task_time_limits
from cutout_fleet.worker.batch import BatchResult, fail_items, run_batch, time_out_running
from cutout_fleet.worker.celery_app import app, membership, runtime, send_batch, worker_settings
from cutout_fleet.worker.interrupts import ItemTimeLimit, TimeLimitExceeded
from cutout_fleet.worker.scope import scope_problem

log = logging.getLogger(__name__)

# The error code of the keys of a refused message (too large, malformed) that still names them.
MESSAGE_REJECTED = "message_rejected"
# A message for a newer worker is handed back this often, this far apart (an hour), then refused.
NEWER_MESSAGE_WAIT_S = 30
NEWER_MESSAGE_RETRIES = 120

# A restarting Redis answers LOADING, a dropped one refuses: both heal, so the task is retried.
REDIS_TRANSIENT = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
)
# The report task's retries (Celery's autoretry): 2 s, 4 s, ... up to 5 min, full jitter, 8 times.
# A batch's retries follow CUTOUT_WORKER__TRANSIENT_RETRIES / __RETRY_BACKOFF_S / __RETRY_BACKOFF_MAX_S.
REPORT_RETRY_POLICY: dict[str, Any] = {
    "max_retries": 8,
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "retry_jitter": True,
}


def send_again(message: TaskMessage, keys: list[str], queue: str) -> None:
    """Queue these items of a message as a new task, with time limits for their number."""
    send_batch(queue, message.model_copy(update={"keys": keys}))


class BatchTask(Task):
    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Hard time limit: the pool child was killed mid-item and Celery acked the message.

        Send it again: recorded items are skipped, and the item that was running has had its attempt
        counted, so an item that always hangs becomes `poison` after CUTOUT_WORKER__MAX_ATTEMPTS.
        """
        if not isinstance(exc, TimeLimitExceeded) or not args:
            return
        try:
            message = parse_message(args[0])
        except InvalidMessage:
            return
        log.warning("task %s hit its hard time limit; sending its %d keys again", task_id, len(message.keys))
        membership().board.release(task_id)  # its holder is gone; this re-send replaces lease recovery
        send_again(message, list(message.keys), _queue(self, message))


def _queue(task: Task, message: TaskMessage) -> str:
    """The queue this task came from (so retries stay there), else the model's queue."""
    delivery = task.request.delivery_info or {}
    return str(delivery.get("routing_key") or queue_for_model(worker_settings(), message.options.model))


@app.task(name=TASK_PROCESS_BATCH, bind=True, base=BatchTask, max_retries=None)
def process_batch(self: Task, payload: object) -> dict[str, object]:
    try:
        message = parse_message(payload)
    except NewerMessage as exc:
        return _hand_back(self, payload, exc)
    except InvalidMessage as exc:
        return _reject(self, payload, exc)
    queue = _queue(self, message)
    task_id = str(self.request.id)
    # Held while it runs: if this process dies, a live worker sends its unfinished items again.
    membership().hold(task_id, message.job_id, queue, payload)
    retrying = False
    try:
        result = _run(message, queue)
        if result.resend:
            send_again(message, result.resend, queue)
        if result.retry:
            _retry_items(self, message, result, queue)
    except Retry:
        retrying = True  # _retry_items holds it again, as waiting for its retry
        raise
    finally:
        if not retrying:
            membership().release(task_id)
    return _summary(result)


def _reject(task: Task, payload: object, exc: InvalidMessage) -> dict[str, object]:
    """Refuse a malformed message, never run it, and fail each key that it still names with the reason:
    otherwise those keys never get an outcome and their job never finishes."""
    log.error("rejected task %s: %s", task.request.id, exc)
    runtime().store.add_rejected(str(task.request.id), str(exc), repr(payload))
    reason = (
        f"its task message was refused ({exc}), so it was not processed; `cutout retry JOB` sends it again"
    )
    failed = 0
    for part in readable_parts(payload):
        if problem := _outside_its_job(part):
            log.error("task %s: its keys are not failed either: %s", task.request.id, problem)
            continue
        keys = list(part.keys)
        failed += fail_items(part, runtime(), _queue(task, part), keys, MESSAGE_REJECTED, reason)
    return {"rejected": str(exc), "failed": failed}


def _outside_its_job(message: TaskMessage) -> str | None:
    """Why a refused message's keys cannot be failed for its job: an unknown job, or a message that
    does not match the job record (scope.py), which only a hand-made message would do."""
    job = runtime().store.get(message.job_id)
    if job is None:
        return f"unknown or expired job {message.job_id!r}"
    return scope_problem(message, job, local_folders=False)  # a Celery task is a fleet worker's


def _run(message: TaskMessage, queue: str) -> BatchResult:
    try:
        return run_batch(message, runtime(), queue)
    except ItemTimeLimit:
        return time_out_running(message, runtime(), queue)  # fired between items
    except REDIS_TRANSIENT as exc:
        # Job state is out of reach, so which items are done is unknown: retry the message whole
        # (recorded items are skipped on the way).
        return BatchResult(retry=list(message.keys), retry_error=TransientError(f"Redis: {exc}"))


def _hand_back(task: Task, payload: object, exc: NewerMessage) -> dict[str, object]:
    """A message for a newer worker goes back to its queue for a while (a rolling upgrade), then is
    refused and kept in cf:rejected if no newer worker took it."""
    if task.request.retries >= NEWER_MESSAGE_RETRIES:
        runtime().store.add_rejected(str(task.request.id), str(exc), repr(payload))
        return {"rejected": str(exc)}
    log.warning("task %s: %s", task.request.id, exc)
    raise task.retry(countdown=NEWER_MESSAGE_WAIT_S, max_retries=NEWER_MESSAGE_RETRIES)


def _retry_items(task: Task, message: TaskMessage, result: BatchResult, queue: str) -> None:
    """Send only the transiently failed items again, after Celery's backoff; fail them when out of tries."""
    policy, retries = worker_settings().worker, task.request.retries
    if retries >= policy.transient_retries:
        reason = f"gave up after {retries} retries: {result.retry_error}"
        fail_items(message, runtime(), queue, result.retry, "transient_error", reason)
        return
    countdown = get_exponential_backoff_interval(
        policy.retry_backoff_s, retries, policy.retry_backoff_max_s, full_jitter=True
    )
    limits = task_time_limits(policy, len(result.retry))
    again = message.model_copy(update={"keys": result.retry})
    args = [again.payload()]
    # Waiting for its retry, the task is held in this worker's memory (an ETA message): keep the lease,
    # so the items come back if this worker dies meanwhile.
    membership().hold(str(task.request.id), message.job_id, queue, args[0], waiting=True)
    raise task.retry(
        args=args,
        exc=result.retry_error,
        countdown=countdown,
        soft_time_limit=limits.soft_s,
        time_limit=limits.hard_s,
    )


def _summary(result: BatchResult) -> dict[str, object]:
    return {
        "recorded": result.recorded,
        "already_done": result.already_done,
        "dropped": result.dropped,
        "parked": result.parked,
        "timed_out": result.timed_out,
        "retry": len(result.retry),
        "sent_again": len(result.resend),
        "handed_back": result.handed_back,
    }


@app.task(name=TASK_FINALIZE_JOB, autoretry_for=(TransientError, *REDIS_TRANSIENT), **REPORT_RETRY_POLICY)
def finalize_job(job_id: str) -> dict[str, object]:
    """Write the completion reports once the last item of a job has its outcome, then send its notice."""
    rt = runtime()
    job = rt.store.get(str(job_id))
    if job is None:
        return {"missing": job_id}
    report = write_report(rt.store, rt.open_storage(job.out), job.job_id)
    # After the report, and never failing it: the notice's own retries are bounded and recorded.
    notice = notify_job(rt.store, job.job_id, rt.settings.notify)
    return {"report": report, "notice": notice.status if notice else None}
