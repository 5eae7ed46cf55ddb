"""Publishing task messages to the Celery queues in Redis, many per round trip.

`send_task` costs one round trip (and a "sent" event) per message: ~400 tasks/s here.  A job of a
million keys needs better, so the envelope of a Celery protocol-2 message is taken once from Celery
itself (one real `send_task` to a scratch queue, read back), and each task then only fills in its id,
body, time limits and queue, and goes out in one pipelined LPUSH batch.  Workers consume them like any
other Celery message (the integration tests enqueue only this way).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery

from cutout_fleet.config.settings import WorkerSettings
from cutout_fleet.messages import TASK_BYTES_BUDGET, TASK_FINALIZE_JOB, TASK_PROCESS_BATCH, TaskMessage
from cutout_fleet.routing import task_time_limits
from cutout_fleet.state.redis_keys import ENVELOPE_PROBE_PREFIX, envelope_probe_keys

_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
# The body is `json.dumps([[payload], {}, _EMBED])`, written around the payload's own JSON text so that
# its size (what workers check) is measured without encoding it twice.
_BODY_TAIL = "], " + json.dumps([{}, _EMBED])[1:]


class CeleryPublisher:
    def __init__(self, app: Celery, worker: WorkerSettings, *, client: redis.Redis | None = None) -> None:
        self.app = app
        self.worker = worker  # the time limits a task of N keys gets (routing.task_time_limits)
        self.redis = client if client is not None else redis.Redis.from_url(app.conf.broker_url)
        self._template: dict[str, Any] | None = None

    def _envelope_template(self) -> dict[str, Any]:
        """One real message, as this Celery and kombu version write it to Redis."""
        if self._template is None:
            probe = f"{ENVELOPE_PROBE_PREFIX}{uuid.uuid4().hex}"
            self.app.send_task(TASK_PROCESS_BATCH, args=[{}], queue=probe, argsrepr="")
            raw = self.redis.lpop(probe)
            self.redis.delete(*envelope_probe_keys(probe))
            if not isinstance(raw, bytes | str):  # None: nothing came back
                raise RuntimeError("could not read back a probe message from Redis")
            self._template = json.loads(raw)
        return self._template

    def encode(self, queue: str, message: TaskMessage) -> str:
        """The Redis list entry for one task: Celery's envelope with this task's fields."""
        return self._envelope(queue, message, json.dumps(message.payload()))

    def entries(self, queue: str, message: TaskMessage) -> Iterator[str]:
        """The Redis list entries for a task: one, or, for a task over TASK_BYTES_BUDGET (a retry of many
        long keys), its halves, so that no worker refuses it for its size."""
        payload = json.dumps(message.payload())
        if len(payload) <= TASK_BYTES_BUDGET or len(message.keys) == 1:
            yield self._envelope(queue, message, payload)
            return
        half = len(message.keys) // 2
        for part in (message.keys[:half], message.keys[half:]):
            yield from self.entries(queue, message.with_keys(part))

    def _envelope(self, queue: str, message: TaskMessage, payload: str) -> str:
        template = self._envelope_template()
        task_id = str(uuid.uuid4())
        limits = task_time_limits(self.worker, len(message.keys))
        summary = (
            f"job {message.job_id}: {len(message.keys)} keys"  # argsrepr: Flower shows it, Redis keeps it
        )
        # Shallow copies: only top-level fields of the headers and properties change per task.
        envelope = {
            **template,
            "headers": dict(template["headers"]),
            "properties": dict(template["properties"]),
        }
        headers, properties = envelope["headers"], envelope["properties"]
        headers.update(
            id=task_id, root_id=task_id, timelimit=[limits.hard_s, limits.soft_s], argsrepr=summary
        )
        properties.update(
            correlation_id=task_id,
            delivery_tag=str(uuid.uuid4()),
            argsrepr=summary,
            delivery_info={"exchange": "", "routing_key": queue},
            # Plain JSON instead of base64: a third less Redis memory per queued key.
            body_encoding=None,
        )
        envelope["body"] = f"[[{payload}{_BODY_TAIL}"
        return json.dumps(envelope, separators=(",", ":"))

    def publish(self, queue: str, messages: Sequence[TaskMessage]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for message in messages:
            for entry in self.entries(queue, message):
                pipe.lpush(queue, entry)
        pipe.execute()

    def job_complete(self, job_id: str, queue: str) -> None:
        self.app.send_task(TASK_FINALIZE_JOB, args=[job_id], queue=queue)


def producer_app(redis_url: str, broker_options: Mapping[str, Any] | None = None) -> Celery:
    """A light Celery app for sending only: the producer never imports the worker or its models."""
    app = Celery("cutout_fleet.producer")
    app.conf.update(
        broker_url=redis_url,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        **(broker_options or {}),
    )
    return app


@dataclass
class CollectingPublisher:
    """Keeps the tasks instead of queueing them, in order: embedded mode runs them in this process."""

    messages: list[TaskMessage] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)

    def publish(self, queue: str, messages: Sequence[TaskMessage]) -> None:
        self.messages.extend(messages)

    def job_complete(self, job_id: str, queue: str) -> None:
        self.completed.append(job_id)
