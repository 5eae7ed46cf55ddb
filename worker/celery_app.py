"""The Celery application: JSON only, acks late, prefetch 1, one queue per kind of worker.

Start a worker with `cutout worker --queue cpu`, or the plain line
`celery -A cutout_fleet.worker.celery_app worker -Q cpu --concurrency 1 -E`.

Importing this module reads no settings: Celery asks for its configuration (`add_defaults` is a
promise) when it first needs it, and a bad setting then raises a ConfigError that names the variable.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from celery import Celery, signals
from kombu.entity import Queue

from cutout_fleet.catalog import load_catalog
from cutout_fleet.config.settings import Settings
from cutout_fleet.connections import celery_broker_options
from cutout_fleet.errors import ConfigError
from cutout_fleet.messages import TASK_FINALIZE_JOB, TASK_PROCESS_BATCH, TaskMessage
from cutout_fleet.routing import task_time_limits
from cutout_fleet.worker import control as _control  # noqa: F401  (registers the fleet inspect command)
from cutout_fleet.worker import drain
from cutout_fleet.worker.batch import BatchRuntime
from cutout_fleet.worker.gpu_memory import log_gpu_memory
from cutout_fleet.worker.membership import Membership
from cutout_fleet.worker.runtime import current_membership, current_runtime, worker_settings
from cutout_fleet.worker.safety.capabilities import safety_levels
from cutout_fleet.worker.sessions import check_gpu_models, check_models_installed

log = logging.getLogger(__name__)


def celery_config(settings: Settings) -> dict[str, Any]:
    worker = settings.worker
    return {
        "broker_url": settings.redis_url,
        # JSON at both ends: a pickled message would run foreign code in the worker.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
        # A task is acked only after it ran; a killed worker's task goes back to the queue.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,  # outcomes live in the job state, not a result backend
        "task_track_started": True,
        "task_send_sent_event": True,
        "worker_send_task_events": True,  # Flower
        "task_default_queue": settings.queues.cpu,
        "task_queues": (Queue(settings.queues.cpu), Queue(settings.queues.gpu)),
        "task_create_missing_queues": True,
        "broker_connection_retry_on_startup": True,
        # Redis redelivers a task not acked within this time: it must outlast the longest task.
        "broker_transport_options": {"visibility_timeout": worker.visibility_timeout_s},
        "worker_max_tasks_per_child": worker.max_tasks_per_child or None,
        "worker_max_memory_per_child": worker.max_memory_per_child_kb or None,
        "worker_concurrency": worker.concurrency,
        # A pool process loads its models before it answers the parent (worker_process_init): Celery's
        # default 4 s would kill one that loads Florence-2 and an 8B GGUF, and start another, forever.
        "worker_proc_alive_timeout": worker.process_start_timeout_s,
        "worker_hijack_root_logger": True,
        **celery_broker_options(settings),
    }


def configure(app: Celery, settings: Settings) -> None:
    """Configure an app now (tests, tools); the fleet's app is configured lazily below."""
    app.conf.update(celery_config(settings))


app = Celery("cutout_fleet", include=["cutout_fleet.worker.tasks"])
app.add_defaults(lambda: celery_config(worker_settings()))


def runtime() -> BatchRuntime:
    """This process's batch runtime; a finished job's report task goes to the job's queue."""
    return current_runtime(
        worker_settings(),
        lambda job_id, queue: app.send_task(TASK_FINALIZE_JOB, args=[job_id], queue=queue),
    )


def membership() -> Membership:
    """This process's heartbeat and held tasks (see membership.py)."""
    return current_membership(worker_settings(), runtime(), send_batch)


def send_batch(queue: str, message: TaskMessage, countdown: float | None = None) -> None:
    """Queue a batch task, with the time limits for its number of items."""
    limits = task_time_limits(worker_settings().worker, len(message.keys))
    app.send_task(
        TASK_PROCESS_BATCH,
        args=[message.model_dump(mode="json", exclude_defaults=True)],
        queue=queue,
        countdown=countdown,
        soft_time_limit=limits.soft_s,
        time_limit=limits.hard_s,
    )


def consumed_queues(worker: Any) -> set[str]:
    """The queues a starting worker (worker_init's sender) consumes: -Q, else every queue it knows."""
    try:
        return set(worker.app.amqp.queues.consume_from)
    except AttributeError:
        return set()


@signals.worker_init.connect
def _check_models(sender: Any = None, **_: object) -> None:
    """Refuse to start a worker whose models are missing or damaged, with the command to fix it, or
    whose gpu models would run without CUDA (unless CUTOUT_WORKER__ALLOW_CPU=true)."""
    try:
        settings = worker_settings()
        catalog = load_catalog(settings)
        check_models_installed(settings, catalog)
        check_gpu_models(settings, catalog, consumed_queues(sender))
    except ConfigError as exc:
        log.critical("%s", exc)
        print(f"cutout worker: {exc}", file=sys.stderr, flush=True)
        # Celery logs and swallows exceptions from signal handlers; a hard exit is the only stop.
        os._exit(3)
    drain.prepare()  # before the pool forks, so every pool process shares the flag


@signals.celeryd_after_setup.connect
def _log_gpu_memory(**_: object) -> None:
    """What the GPUs hold before this worker's processes load anything (once logging is set up)."""
    log_gpu_memory("at worker start")


@signals.worker_shutting_down.connect
def _begin_drain(**_: object) -> None:
    """Warm shutdown: pool processes hand back the items they have not started (see drain.py)."""
    drain.begin()


@signals.worker_process_init.connect
def _join_fleet(**_: object) -> None:
    """After fork, before the first task: create the model sessions (and, on a worker that can run
    the full safety workflow, load its models: tens of seconds that must not count against the first
    item's time limit), then start the heartbeat."""
    current = runtime()
    current.sessions.warm_up()
    if "full" in safety_levels(current.settings):
        current.safety_stages.warm_up("full")
        log_gpu_memory(f"after loading the models in process {os.getpid()}")
    membership().start()


@signals.worker_process_shutdown.connect
def _leave_fleet(**_: object) -> None:
    membership().stop()
