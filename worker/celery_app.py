"""The Celery application: JSON only, acks late, prefetch 1, one queue per kind of worker.

Start a worker with `cutout worker --queue cpu`, or the plain line
`celery -A cutout_fleet.worker.celery_app worker -Q cpu --concurrency 1 -E`.
"""

from __future__ import annotations

import logging
import sys

from celery import Celery, signals
from kombu import Queue

from cutout_fleet.config.settings import Settings, load_settings
from cutout_fleet.connections import celery_broker_options
from cutout_fleet.errors import ConfigError

log = logging.getLogger(__name__)


def configure(app: Celery, settings: Settings) -> None:
    worker = settings.worker
    app.conf.update(
        broker_url=settings.redis_url,
        # JSON at both ends: a pickled message would run foreign code in the worker.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        # A task is acked only after it ran; a killed worker's task goes back to the queue.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,  # outcomes live in the job state, not a result backend
        task_track_started=True,
        task_send_sent_event=True,
        worker_send_task_events=True,  # Flower
        task_default_queue=settings.queues.cpu,
        task_queues=(Queue(settings.queues.cpu), Queue(settings.queues.gpu)),
        task_create_missing_queues=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Redis redelivers a task not acked within this time: it must outlast the longest task.
            "visibility_timeout": worker.visibility_timeout_s,
        },
        worker_max_tasks_per_child=worker.max_tasks_per_child or None,
        worker_max_memory_per_child=worker.max_memory_per_child_kb or None,
        worker_concurrency=worker.concurrency,
        worker_hijack_root_logger=True,
        **celery_broker_options(settings),
    )


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"cutout: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


settings = _settings_or_exit()
app = Celery("cutout_fleet", include=["cutout_fleet.worker.tasks"])
configure(app, settings)


@signals.worker_init.connect
def _check_models(**_: object) -> None:
    """Refuse to start a worker whose models are missing or damaged, with the command to fix it."""
    from cutout_fleet.catalog import load_catalog
    from cutout_fleet.worker.sessions import check_models_installed

    try:
        check_models_installed(settings, load_catalog(settings))
    except ConfigError as exc:
        log.critical("%s", exc)
        print(f"cutout worker: {exc}", file=sys.stderr, flush=True)
        # Celery logs and swallows exceptions from signal handlers; a hard exit is the only stop.
        import os

        os._exit(3)


@signals.worker_process_init.connect
def _load_models(**_: object) -> None:
    """Create this process's model sessions after fork, before the first task arrives."""
    from cutout_fleet.worker.tasks import runtime

    runtime().sessions.warm_up()
