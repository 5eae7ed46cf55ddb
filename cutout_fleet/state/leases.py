"""Leases: which worker process holds which task, and which of them stopped answering.

Modelled on dramatiq's Redis broker: every worker process beats into a sorted set every
`lease_s / 4`; every task it starts (or schedules for a retry) is written into one hash under its
holder id.  A holder whose beat is older than the lease is dead (killed, OOM, a lost machine, a
hung VM): any live process takes its tasks in one atomic step and sends their unfinished items
again.  Kombu's visibility timeout stays as the last backstop; the late redelivery it brings finds
every item recorded and costs one gate call per item.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from cutout_fleet.state.job_hash import text
from cutout_fleet.state.redis_keys import HELD_KEY, MAINTENANCE_LOCK, WORKERS_KEY
from cutout_fleet.state.scripts import lua_source

# A holder beats every lease_s / BEATS_PER_LEASE seconds, so a lease survives a few lost beats.
BEATS_PER_LEASE = 4


def new_holder_id() -> str:
    """This process's id in the lease board: host, pid and a token (pids repeat across machines)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True)
class HeldTask:
    """A task some worker process holds: running, or waiting for its retry."""

    task_id: str
    holder: str
    job_id: str
    queue: str
    payload: dict[str, Any]  # the task message (JSON data) the holder will run
    since: float  # server time it was taken
    waiting: bool = False  # scheduled for a retry, not running
    last_beat: float | None = None  # the holder's last heartbeat (set for stalled tasks)

    @property
    def keys(self) -> list[str]:
        return [str(key) for key in self.payload.get("keys", [])]

    @classmethod
    def from_json(cls, task_id: str, line: str | bytes) -> HeldTask:
        entry = json.loads(line)
        return cls(
            task_id=str(entry.get("task_id", task_id)),
            holder=str(entry["holder"]),
            job_id=str(entry["job_id"]),
            queue=str(entry["queue"]),
            payload=dict(entry["payload"]),
            since=float(entry["since"]),
            waiting=bool(entry.get("waiting", False)),
            last_beat=None if entry.get("last_beat") is None else float(entry["last_beat"]),
        )


class LeaseBoard:
    """The fleet's leases in Redis (keys in `redis_keys`); times are the Redis server's."""

    def __init__(self, client: redis.Redis, lease_s: float) -> None:
        self._redis = client
        self.lease_s = lease_s
        self._beat = client.register_script(lua_source("beat"))
        self._hold = client.register_script(lua_source("hold"))
        self._release = client.register_script(lua_source("release"))
        self._take_stalled = client.register_script(lua_source("take_stalled"))

    def beat(self, holder: str) -> float:
        return float(text(self._beat(keys=[WORKERS_KEY], args=[holder])))

    def forget(self, holder: str) -> None:
        """A process that stops cleanly leaves the board (it holds nothing by then)."""
        self._redis.zrem(WORKERS_KEY, holder)

    def hold(
        self, task_id: str, holder: str, job_id: str, queue: str, payload: object, *, waiting: bool = False
    ) -> None:
        entry = {"holder": holder, "job_id": job_id, "queue": queue, "payload": payload, "waiting": waiting}
        self._hold(keys=[HELD_KEY], args=[task_id, json.dumps(entry, separators=(",", ":"))])

    def release(self, task_id: str, holder: str = "") -> bool:
        """Forget the task if `holder` still holds it ("" : whoever does)."""
        return bool(self._release(keys=[HELD_KEY], args=[task_id, holder]))

    def held(self, job_id: str | None = None) -> Iterator[HeldTask]:
        for task_id, line in self._redis.hscan_iter(HELD_KEY, count=500):
            task = HeldTask.from_json(text(task_id), line)
            if job_id is None or task.job_id == job_id:
                yield task

    def last_beats(self) -> dict[str, float]:
        pairs = self._redis.zrange(WORKERS_KEY, 0, -1, withscores=True)
        return {text(pair[0]): float(pair[1]) for pair in pairs if isinstance(pair, tuple)}

    def server_time(self) -> float:
        seconds, micros = self._redis.time()
        return float(seconds) + float(micros) / 1e6

    def stalled(self, job_id: str | None = None) -> list[HeldTask]:
        """Held tasks whose holder stopped beating (read only: what `take_stalled` would take)."""
        beats, cutoff = self.last_beats(), self.server_time() - self.lease_s
        return [
            HeldTask(**{**task.__dict__, "last_beat": beats.get(task.holder)})
            for task in self.held(job_id)
            if beats.get(task.holder, 0.0) < cutoff and task.since < cutoff
        ]

    def take_stalled(self) -> list[HeldTask]:
        """Remove and return the tasks of dead holders, once: the caller must send them again."""
        lines = self._take_stalled(keys=[WORKERS_KEY, HELD_KEY], args=[self.lease_s])
        return [HeldTask.from_json("", line) for line in lines]

    def try_maintenance(self, holder: str) -> bool:
        """True for one caller per quarter lease, fleet-wide: recovery passes do not pile up."""
        ttl_ms = max(1, int(self.lease_s * 1000 / 4))
        return bool(self._redis.set(MAINTENANCE_LOCK, holder, nx=True, px=ttl_ms))
