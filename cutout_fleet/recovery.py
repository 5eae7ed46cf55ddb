"""Sending again what a dead worker held: only its items that have no outcome yet.

Used by every live worker (automatic, once a holder's lease runs out) and by `cutout requeue`
(by hand).  Both are safe at any time: an item is recorded at most once and outputs are written
conditionally, so a late twin of a re-sent item changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cutout_fleet.items import item_id
from cutout_fleet.messages import InvalidMessage, TaskMessage, parse_message
from cutout_fleet.state.leases import HeldTask, LeaseBoard
from cutout_fleet.state.protocol import JobStore

log = logging.getLogger(__name__)

# (queue, message) -> None: puts a task on a queue (the worker's Celery app, or the producer's publisher).
SendTask = Callable[[str, TaskMessage], None]


@dataclass(frozen=True)
class Resent:
    job_id: str
    queue: str
    keys: int  # items sent again (those without an outcome)
    from_holder: str


def unfinished(store: JobStore, payload: object) -> TaskMessage | None:
    """The message cut down to its items without an outcome; None when nothing is left (or unreadable)."""
    try:
        message = parse_message(payload)
    except InvalidMessage as exc:
        log.warning("not re-sending an unreadable held message: %s", exc)
        return None
    versions = message.versions or {}
    pending = [
        key
        for key in message.keys
        if not store.is_recorded(message.job_id, item_id(message.bucket, key, versions.get(key)))
    ]
    return message.model_copy(update={"keys": pending}) if pending else None


def resend(store: JobStore, tasks: Iterable[HeldTask], send: SendTask) -> list[Resent]:
    """Send each task's unfinished items again, as one new task per held task."""
    done: list[Resent] = []
    for task in tasks:
        message = unfinished(store, task.payload)
        if message is None:
            continue
        send(task.queue, message)
        done.append(Resent(task.job_id, task.queue, len(message.keys), task.holder))
        log.warning(
            "re-sent %d items of job %s held by %s (no heartbeat since %s)",
            len(message.keys),
            task.job_id,
            task.holder,
            task.last_beat,
        )
    return done


def recover_stalled(board: LeaseBoard, store: JobStore, send: SendTask) -> list[Resent]:
    """Take the tasks of holders past their lease (atomically: once fleet-wide) and send them again."""
    return resend(store, board.take_stalled(), send)
