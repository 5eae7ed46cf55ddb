"""Job lifecycle: cancel, resume (after the failure guard), retry the failed items."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from cutout_fleet.errors import JobStateConflict
from cutout_fleet.messages import TaskMessage, parse_message
from cutout_fleet.options import make_options
from cutout_fleet.outcomes import Outcome
from cutout_fleet.producer.enqueue import Publisher
from cutout_fleet.producer.status import job_status
from cutout_fleet.state import CANCELLED, RUNNING, STOPPED, JobRecord, RedisJobStore

RETRY_CHUNK = 500
QueueFor = Callable[[str], str]


def cancel_job(store: RedisJobStore, publisher: Publisher, job_id: str) -> JobRecord:
    """Stop all further work: workers drop the job's queued tasks unprocessed; the report says cancelled."""
    job = job_status(store, job_id)
    if not store.set_state(job_id, CANCELLED, only_from=(RUNNING, STOPPED)):
        raise JobStateConflict(f"job {job_id} is {job.state}; only running or stopped jobs can be cancelled")
    for _ in store.take_parked(job_id):
        pass  # held tasks of a stopped job: cancelled means they never run
    publisher.job_complete(job_id, job.queue)  # the report of what was done before the cancel
    return job_status(store, job_id)


def _republish_parked(store: RedisJobStore, publisher: Publisher, job_id: str, queue_for: QueueFor) -> int:
    count = 0
    for payload in store.take_parked(job_id):
        message = parse_message(json.loads(payload))
        publisher.publish(queue_for(message.options.model), [message])
        count += len(message.keys)
    return count


@dataclass(frozen=True)
class ResumeResult:
    job: JobRecord
    republished: int


def resume_job(
    store: RedisJobStore, publisher: Publisher, job_id: str, queue_for: QueueFor, *, guard: bool = True
) -> ResumeResult:
    """Continue a stopped job: its held tasks go back on the queue and the failure guard starts afresh
    (`guard=False`: the guard is off for the rest of this job)."""
    job = job_status(store, job_id)
    if job.state == STOPPED and not guard:
        store.disable_guard(job_id)
    if not store.set_state(job_id, RUNNING, only_from=(STOPPED,)):
        raise JobStateConflict(f"job {job_id} is {job.state}; only a stopped job can be resumed")
    count = _republish_parked(store, publisher, job_id, queue_for)
    if job.final and store.finalize(job_id):
        publisher.job_complete(job_id, job.queue)  # everything had finished while it was stopped
    return ResumeResult(job_status(store, job_id), count)


@dataclass(frozen=True)
class RetryResult:
    job: JobRecord
    retried: int
    republished: int


def _retry_messages(
    job: JobRecord, failures: Iterable[Outcome], items_per_task: int
) -> Iterator[TaskMessage]:
    """Rebuild tasks from failed outcomes: same source bucket, same (per-key) options, same versions.

    The bucket of each outcome is its task's source, so every item keeps its identity (item id).
    A key occurs once per group: two versions of one key share an output, so the later one failed as
    an output collision, which is never retried.
    """
    groups: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
    for outcome in failures:
        source = job.source if job.mapping == "relative" else f"s3://{outcome.bucket}/"
        options = make_options(**{**job.options, **(outcome.options or {})})
        groups[(source, options.model_dump_json())].append(outcome)
    for (source, options_json), outcomes in groups.items():
        for i in range(0, len(outcomes), items_per_task):
            part = outcomes[i : i + items_per_task]
            versions = {o.key: o.version for o in part if o.version}
            yield TaskMessage.model_validate(
                {
                    "job_id": job.job_id,
                    "source": source,
                    "out": job.out,
                    "options": json.loads(options_json),
                    "keys": [o.key for o in part],
                    "mapping": job.mapping,
                    "versions": versions or None,
                    "force": job.force,
                    "item_options": part[0].options,
                }
            )


def retry_job(
    store: RedisJobStore, publisher: Publisher, job_id: str, *, items_per_task: int, queue_for: QueueFor
) -> RetryResult:
    """Run only the failed items again (and a stopped job's held tasks); succeeded ones are left alone."""
    job = job_status(store, job_id)
    if job.state == CANCELLED:
        raise JobStateConflict(f"job {job_id} was cancelled; enqueue it again as a new job")
    if job.state == STOPPED:
        store.set_state(job_id, RUNNING, only_from=(STOPPED,))
    retried = 0
    # A collision is not a failure that running again can fix: it would overwrite the other item's output.
    failures = (o for o in store.failed_outcomes(job_id) if o.error_code != "output_collision")
    while chunk := list(islice(failures, RETRY_CHUNK)):
        # Forget first, publish second: a worker can then record the new outcome straight away.
        forgotten = store.unrecord_failed(job_id, [o.item_id for o in chunk])
        retried += forgotten
        for message in _retry_messages(job, chunk, items_per_task):
            publisher.publish(queue_for(message.options.model), [message])
    republished = _republish_parked(store, publisher, job_id, queue_for)
    return RetryResult(job_status(store, job_id), retried, republished)
