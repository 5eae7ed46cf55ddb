"""What the producer can learn about the live fleet from Celery's control channel.

Every worker answers the `cutout_fleet` inspect command (worker/control.py) with the queues it consumes,
its models and its pool size.  One broadcast, one timeout: workers that do not answer within it count as
absent, and a worker that answers without knowing the command (another version) as unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from celery import Celery

INSPECT_TIMEOUT_S = 1.0
# The command's name, as worker/control.py registers it (the producer cannot import the worker).
FLEET_COMMAND = "cutout_fleet"


@dataclass(frozen=True)
class LiveWorker:
    """One worker that answered: what it consumes and runs (None: it did not say)."""

    name: str
    queues: frozenset[str] | None
    installed: frozenset[str] | None
    processes: int


@dataclass(frozen=True)
class QueueFleet:
    """The live workers that consume one queue, and those whose queues are unknown."""

    queue: str
    workers: tuple[LiveWorker, ...]
    unknown: tuple[LiveWorker, ...]

    @property
    def processes(self) -> int:
        return sum(w.processes for w in self.workers)

    def serving(self, model: str) -> list[LiveWorker]:
        """The workers of this queue that have `model` installed."""
        return [w for w in self.workers if w.installed is not None and model in w.installed]

    def may_serve(self, model: str) -> bool:
        """False only when workers answered for this queue and none of them can have `model`."""
        if self.unknown or not self.workers:
            return True
        return any(w.installed is None or model in w.installed for w in self.workers)

    def models(self) -> list[str]:
        """Every model that some worker of this queue has installed."""
        return sorted({m for w in self.workers for m in (w.installed or ())})


def _worker(name: str, reply: Any) -> LiveWorker:
    if not isinstance(reply, dict) or "queues" not in reply:
        return LiveWorker(name, None, None, 0)  # e.g. {"error": "No such command"} from another version
    installed = reply.get("installed")
    return LiveWorker(
        name,
        frozenset(reply["queues"]),
        frozenset(installed) if isinstance(installed, list) else None,
        int(reply.get("processes") or 1),
    )


def live_workers(redis_url: str, broker_options: Mapping[str, Any] | None = None) -> list[LiveWorker]:
    """Every worker that answers now, with what it says about itself."""
    app = Celery(broker=redis_url)
    app.conf.update(
        accept_content=["json"], task_serializer="json", result_serializer="json", **(broker_options or {})
    )
    try:
        replies = app.control.broadcast(FLEET_COMMAND, reply=True, timeout=INSPECT_TIMEOUT_S) or []
    finally:
        app.close()
    return [_worker(name, reply) for answer in replies for name, reply in answer.items()]


def queue_fleet(redis_url: str, queue: str, broker_options: Mapping[str, Any] | None = None) -> QueueFleet:
    """The live workers that consume `queue` (and those that could not say)."""
    workers = live_workers(redis_url, broker_options)
    return QueueFleet(
        queue,
        tuple(w for w in workers if w.queues is not None and queue in w.queues),
        tuple(w for w in workers if w.queues is None),
    )


def live_worker_processes(redis_url: str, queue: str, broker_options: Mapping[str, Any] | None = None) -> int:
    """Pool processes of the workers that answer now and consume `queue` (0 when none answer)."""
    return queue_fleet(redis_url, queue, broker_options).processes
