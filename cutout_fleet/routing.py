"""Where a task goes and how long it may run: rules the producer and the worker must agree on."""

from __future__ import annotations

from dataclasses import dataclass

from cutout_fleet.catalog import load_catalog
from cutout_fleet.config.settings import Settings, WorkerSettings


def queue_for_model(settings: Settings, model: str) -> str:
    """The queue whose workers run `model` (its spec says cpu or gpu; settings name the queues)."""
    kind = load_catalog(settings).get(model).queue
    return settings.queues.cpu if kind == "cpu" else settings.queues.gpu


@dataclass(frozen=True)
class TaskTimeLimits:
    """Celery's per-task limits for a task of some keys.

    The soft limit lets the worker record a clean `timeout` for the running key; the hard limit, a
    grace later, kills a pool child stuck inside native code.
    """

    soft_s: float
    hard_s: float


def task_time_limits(worker: WorkerSettings, items: int) -> TaskTimeLimits:
    soft_s = worker.item_time_limit_s * items
    return TaskTimeLimits(soft_s=soft_s, hard_s=soft_s + worker.hard_limit_grace_s)
