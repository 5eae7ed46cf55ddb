"""`cutout requeue JOB`: send a job's outstanding items again, by hand, without waiting for leases.

Outstanding: every item in a task that a worker holds (running, or waiting for a retry) or has
reserved (kombu's `unacked` hash) and that has no outcome yet.  Safe at any time: an item is recorded
at most once and outputs are written conditionally, so the twin that was already running changes
nothing (it costs the work twice, which is why the fleet does this by itself only for dead holders).
Tasks still in the queue are not touched: they will run anyway.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from cutout_fleet.errors import JobStateConflict
from cutout_fleet.items import item_id
from cutout_fleet.messages import TASK_PROCESS_BATCH, TaskMessage
from cutout_fleet.producer.enqueue import Publisher
from cutout_fleet.producer.status import job_status
from cutout_fleet.recovery import unfinished
from cutout_fleet.state import RUNNING, JobStore
from cutout_fleet.state.leases import LeaseBoard
from cutout_fleet.state.redis_keys import KOMBU_UNACKED_KEY


@dataclass
class RequeueResult:
    job_id: str
    items: int = 0  # items sent again
    tasks: int = 0
    from_stalled: int = 0  # of `items`: held by a worker that stopped answering
    queues: set[str] = field(default_factory=set)


def batch_payload(envelope: dict[str, Any]) -> dict[str, Any] | None:
    """The task message inside a Celery envelope of a batch task (plain or base64 body), else None."""
    try:
        if envelope.get("headers", {}).get("task") != TASK_PROCESS_BATCH:
            return None
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        payload = json.loads(body)[0][0]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None  # not a message of ours
    return payload if isinstance(payload, dict) else None


def reserved_payloads(client: redis.Redis, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(queue, task payload) of every batch task of this job that some worker reserved, unacked."""
    for _tag, raw in client.hscan_iter(KOMBU_UNACKED_KEY, count=500):
        try:
            envelope, _exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        payload = batch_payload(envelope) if isinstance(envelope, dict) else None
        if payload is not None and payload.get("job_id") == job_id:
            yield str(routing_key), payload


def requeue_job(
    store: JobStore, board: LeaseBoard, client: redis.Redis, publisher: Publisher, job_id: str
) -> RequeueResult:
    job = job_status(store, job_id)
    if job.state != RUNNING:
        raise JobStateConflict(f"job {job_id} is {job.state}; only a running job has items to requeue")
    result = RequeueResult(job_id)
    stalled = {task.task_id for task in board.stalled(job_id)}
    held = list(board.held(job_id))
    sources = [(task.queue, task.payload, task.task_id in stalled) for task in held]
    sources += [(queue, payload, False) for queue, payload in reserved_payloads(client, job_id)]
    sent: set[str] = set()  # item ids: a running task is both held and reserved
    for queue, payload, from_stalled in sources:
        message = _not_yet_sent(unfinished(store, payload), sent)
        if message is None:
            continue
        publisher.publish(queue, [message])
        result.items += len(message.keys)
        result.tasks += 1
        result.from_stalled += len(message.keys) if from_stalled else 0
        result.queues.add(queue)
    for task in held:
        # Its items are on the queue again: the lease need not send them a second time if it dies.
        board.release(task.task_id, task.holder)
    return result


def _not_yet_sent(message: TaskMessage | None, sent: set[str]) -> TaskMessage | None:
    if message is None:
        return None
    versions = message.versions or {}
    keys = []
    for key in message.keys:
        item = item_id(message.bucket, key, versions.get(key))
        if item not in sent:
            sent.add(item)
            keys.append(key)
    return message.model_copy(update={"keys": keys}) if keys else None
