"""The worker's answer on Celery's control channel to "what can you run?": queues, models, safety levels.

`cutout enqueue` asks every live worker (`producer.fleet`) before it queues a job, and refuses a model
or a safety level that the workers serving its queue do not have.  Importing this module registers the
command with Celery's control panel; `celery_app` imports it so that every worker answers.
"""

from __future__ import annotations

from typing import Any

from celery.worker.control import inspect_command

from cutout_fleet.catalog import load_catalog
from cutout_fleet.config.settings import Settings
from cutout_fleet.worker.runtime import worker_settings
from cutout_fleet.worker.safety.capabilities import safety_levels

# The command's name on the control channel; the producer sends it (cutout_fleet.producer.fleet).
FLEET_COMMAND = "cutout_fleet"


def installed_models(settings: Settings) -> list[str]:
    """The pinned models (checked at start-up) and every other catalogue model whose file is present."""
    catalog = load_catalog(settings)
    present = {name for name in catalog.names() if catalog.get(name).path_in(settings.model_dir).is_file()}
    return sorted(present | set(settings.worker.models))


def fleet_reply(settings: Settings, queues: list[str], processes: int) -> dict[str, Any]:
    """What a worker advertises: the queues it consumes, its models, its pool processes and the safety
    levels it can run."""
    return {
        "queues": queues,
        "models": list(settings.worker.models),
        "installed": installed_models(settings),
        "processes": processes,
        "safety": list(safety_levels(settings)),
    }


@inspect_command(name=FLEET_COMMAND)  # type: ignore[untyped-decorator]
def cutout_fleet(state: Any) -> dict[str, Any]:  # celery ships no types: the decorator is untyped
    """The queues this worker consumes, its configured and installed models, pool size and safety levels."""
    consumer = state.consumer
    queues = [q.name for q in consumer.task_consumer.queues] if consumer.task_consumer else []
    processes = int(getattr(consumer.pool, "limit", 0) or 0) if consumer.pool else 0
    return fleet_reply(worker_settings(), queues, processes)
