"""What the producer can learn about the live fleet from Celery's control channel.

Every worker answers the `cutout_fleet` inspect command (worker/control.py) with the queues it consumes,
its models, its pool size and the safety levels it can run.  One broadcast, one timeout: workers that do
not answer within it count as absent, and a worker that answers without knowing the command (another
version) as unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from celery import Celery

from cutout_fleet.safety.levels import LEVEL_EXTRAS, NO_SAFETY

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
    safety: frozenset[str] | None = None  # the safety levels it can run


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

    def running_safety(self, level: str) -> list[LiveWorker]:
        """The workers of this queue that can run safety level `level`."""
        return [w for w in self.workers if w.safety is not None and level in w.safety]

    def may_run_safety(self, level: str) -> bool:
        """False only when workers answered for this queue and none of them can run `level` (the rule
        for models)."""
        if level == NO_SAFETY or self.unknown or not self.workers:
            return True
        return any(w.safety is None or level in w.safety for w in self.workers)

    def safety_levels(self) -> list[str]:
        """Every safety level that some worker of this queue can run."""
        return sorted({level for w in self.workers for level in (w.safety or ())})


def _worker(name: str, reply: Any) -> LiveWorker:
    if not isinstance(reply, dict) or "queues" not in reply:
        return LiveWorker(name, None, None, 0)  # e.g. {"error": "No such command"} from another version
    installed = reply.get("installed")
    # A worker from before safety levels answers without them: it runs none.
    safety = reply.get("safety", [NO_SAFETY])
    return LiveWorker(
        name,
        frozenset(reply["queues"]),
        frozenset(installed) if isinstance(installed, list) else None,
        int(reply.get("processes") or 1),
        frozenset(safety) if isinstance(safety, list) else None,
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


def safety_refusal(fleet: QueueFleet, level: str) -> str | None:
    """Why a job at safety level `level` cannot run on `fleet` (JobRefused's message), or None when it can."""
    if fleet.may_run_safety(level):
        return None
    have = ", ".join(fleet.safety_levels()) or "none"
    extra = LEVEL_EXTRAS.get(level, level)
    how = (
        "the Dockerfile.gpu image has it) and pull both Hub models (cutout models pull florence-2-large, "
        "cutout models pull llama-3.1-8b-instruct)"
        if level == "full"
        else "or build its image with --build-arg WITH_SAFETY_LIGHT=true)"
    )
    return (
        f"--safety {level}: none of the {len(fleet.workers)} live workers on queue {fleet.queue!r} can run "
        f"it (they run: {have}); install the {extra!r} extra on a worker (pip install "
        f"'cutout-fleet[{extra}]', {how}, restart it, or choose another --safety"
    )


def safety_warning(fleet: QueueFleet, level: str) -> str | None:
    """A warning when only some live workers of the queue can run `level`: the others record its stages
    as missing, and the gate's policy decides (default: review)."""
    if level == NO_SAFETY or not fleet.workers:
        return None
    able = len(fleet.running_safety(level))
    if able == len(fleet.workers) or able == 0:
        return None
    return (
        f"only {able} of the {len(fleet.workers)} live workers on queue {fleet.queue!r} can run --safety "
        f"{level}; items the others take get a verdict with the stage missing (the policy's on_missing)"
    )
