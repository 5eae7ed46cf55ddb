"""This worker process as a member of the fleet: its heartbeat, the tasks it holds, and the recovery
of tasks whose holder died (any live member may do it; one at a time, fleet-wide).

One `Membership` per pool process, started after fork.  The heartbeat runs in a daemon thread, so
it goes on while the process is inside the model (onnxruntime releases the GIL) and stops with the
process: a killed, OOM-killed or frozen (SIGSTOP) process stops beating, which is what the lease
detects.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import redis.exceptions

from cutout_fleet.recovery import SendTask, recover_stalled
from cutout_fleet.state.leases import BEATS_PER_LEASE, LeaseBoard, new_holder_id
from cutout_fleet.state.protocol import JobStore

log = logging.getLogger(__name__)


class Membership:
    def __init__(self, board: LeaseBoard, store: JobStore, send: SendTask) -> None:
        self.board, self.store, self.send = board, store, send
        self.holder = new_holder_id()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            self.board.beat(self.holder)  # before the first task: a holder with no beat counts as dead
        except redis.exceptions.RedisError as exc:
            log.warning("first heartbeat failed (the thread keeps trying): %s", exc)
        self._thread = threading.Thread(target=self._run, name="cutout-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(redis.exceptions.RedisError):  # else the lease runs out by itself
            self.board.forget(self.holder)

    def hold(self, task_id: str, job_id: str, queue: str, payload: Any, *, waiting: bool = False) -> None:
        self.board.hold(task_id, self.holder, job_id, queue, payload, waiting=waiting)

    def release(self, task_id: str) -> None:
        self.board.release(task_id, self.holder)

    def beat_and_recover(self) -> None:
        """One heartbeat, then, if no other member is at it, one recovery pass."""
        self.board.beat(self.holder)
        if self.board.try_maintenance(self.holder):
            recover_stalled(self.board, self.store, self.send)

    def _run(self) -> None:
        interval_s = self.board.lease_s / BEATS_PER_LEASE
        while not self._stop.wait(interval_s):
            try:
                self.beat_and_recover()
            except redis.exceptions.RedisError as exc:
                # Redis away: no beat now; the lease is long enough to ride out a restart.
                log.warning("heartbeat failed: %s", exc)
            except Exception:  # the heartbeat must outlive any one bad pass
                log.exception("recovery pass failed")
