"""A dead worker's items come back in about a lease (60 s), not after the visibility timeout (6 h).

Real worker processes, the production defaults for the lease and the visibility timeout.  Each test
proves the fault hit mid-task, then that nothing was lost and nothing counted twice.  The recovery
times are printed (run with -s), not asserted: waits are bounded at three leases.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cutout_fleet.config.settings import WorkerSettings
from cutout_fleet.producer.requeue import batch_payload
from cutout_fleet.state.leases import LeaseBoard
from tests.support import chaos
from tests.support.fleet import Fleet, FleetFactory, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

LEASE_S = WorkerSettings().lease_s  # the production default, as the issue asks
assert WorkerSettings().visibility_timeout_s >= 3600  # and the production backstop: hours
RECOVERY_WAIT_S = 3 * LEASE_S
JOB_DONE_S = RECOVERY_WAIT_S + 120


@pytest.fixture
def fleet(make_fleet: FleetFactory) -> Iterator[Fleet]:
    """Slow items, four a task; lease and visibility timeout left at their defaults."""
    with make_fleet(models=[chaos.SLOW], CUTOUT_ITEMS_PER_TASK="4") as fleet:
        yield fleet


def _board(fleet: Fleet) -> LeaseBoard:
    return LeaseBoard(fleet.redis, LEASE_S)


def _held_task_ids(fleet: Fleet, job_id: str) -> set[str]:
    return {task.task_id for task in _board(fleet).held(job_id)}


def _processes(worker: WorkerProcess) -> list[int]:
    return [worker.proc.pid, *worker.pool_pids()]


def _wait_released(fleet: Fleet, task_ids: set[str], started: float) -> float:
    """Wait until none of these tasks is held any more; the seconds it took since `started`."""
    fleet.wait_until(
        lambda: not (task_ids & {t.task_id for t in _board(fleet).held()}),
        RECOVERY_WAIT_S,
        lambda: f"the dead worker's tasks {task_ids} to be taken over",
    )
    return time.monotonic() - started


def _wait_stalled_in_status(fleet: Fleet, job_id: str) -> dict[str, Any]:
    """`cutout status JOB --json` until it names a stalled task (after two missed heartbeats)."""
    found: list[dict[str, Any]] = []

    def shown() -> bool:
        found[:] = fleet.cli_json("status", job_id, "--json")["stalled"]
        return bool(found)

    fleet.wait_until(shown, RECOVERY_WAIT_S, lambda: "cutout status to show a stalled task")
    return found[0]


def test_a_whole_worker_killed_mid_job_has_its_items_back_within_a_lease(fleet: Fleet) -> None:
    # Given a job in flight on one worker, with the production visibility timeout (hours)
    bucket, keys, first, job_id = chaos.job_in_flight(fleet, "sigkill")
    held = _held_task_ids(fleet, job_id)
    assert held  # the running task is on the lease board

    # When the whole worker dies at once (main process and pool: a lost machine, an OOM-killed pod)
    killed_at = time.monotonic()
    first.kill()
    fleet.start_worker(concurrency=1)

    # Then a live worker takes its task over after the lease, and the job finishes, every item once
    recovered_s = _wait_released(fleet, held, killed_at)
    fleet.wait_for_state(job_id, "done", JOB_DONE_S)
    print(f"\nSIGKILL: the dead worker's items were sent again {recovered_s:.1f} s after the kill")
    chaos.assert_exactly_once(fleet, bucket, job_id, keys)
    assert fleet.redis.hlen("unacked") >= 1  # its own message still waits out the visibility timeout


def test_a_frozen_worker_is_taken_over_and_its_late_result_duplicates_nothing(fleet: Fleet) -> None:
    # Given a job in flight on one worker, its outputs in a versioned bucket (a rewrite would show)
    bucket, keys, first, job_id = chaos.job_in_flight(fleet, "sigstop", versioned=True)
    held = _held_task_ids(fleet, job_id)

    # When the worker freezes mid-item (SIGSTOP: a hung VM), another takes over, and then it wakes up
    frozen = _processes(first)
    stopped_at = time.monotonic()
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        fleet.start_worker(concurrency=1)
        stalled = _wait_stalled_in_status(fleet, job_id)
        recovered_s = _wait_released(fleet, held, stopped_at)
        fleet.wait_for_state(job_id, "done", JOB_DONE_S)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    fleet.wait_drained()  # the woken worker finished its task (its late results landed, or not)
    print(f"\nSIGSTOP: the frozen worker's items were sent again {recovered_s:.1f} s after it froze")
    # (and meanwhile `cutout status` named them, with the time they would come back)
    assert stalled["items"] >= 1 and 0 <= stalled["resend_in_s"] <= LEASE_S

    # Then every item counted once, and each output was written exactly once
    chaos.assert_exactly_once(fleet, bucket, job_id, keys)
    versions = fleet.s3.list_object_versions(Bucket=bucket, Prefix="out/").get("Versions", [])
    outputs = [v["Key"] for v in versions if "/_reports/" not in v["Key"]]
    assert len(outputs) == len(set(outputs)) == len(keys)


def test_a_warm_shutdown_hands_back_the_items_it_has_not_started(make_fleet: FleetFactory) -> None:
    with make_fleet(models=[chaos.SLOW], CUTOUT_ITEMS_PER_TASK="8") as fleet:
        # Given a worker in the middle of a task of eight slow items
        bucket = fleet.new_bucket("sigterm")
        keys = chaos.upload_photos(fleet, bucket)
        first = fleet.start_worker(concurrency=1)
        job_id = chaos.enqueue_prefix(fleet, bucket)
        fleet.wait_until(lambda: chaos.in_flight(fleet.store, job_id), 60, lambda: "an item in flight")

        # When it gets SIGTERM (a pod scaled down) and exits
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(timeout=120) == 0
        first.killed = True  # stopped on purpose

        # Then it finished the item it was on, and every item without an outcome is on the queue now
        done = {o.key for o in fleet.store.iter_outcomes(job_id)}
        queued: set[str] = set()
        for entry in fleet.redis.lrange(fleet.queue, 0, -1):
            payload = batch_payload(json.loads(entry))
            assert payload is not None
            queued.update(payload["keys"])
        assert len(done) < 8  # it did not work through its whole task first
        assert done | queued == set(keys) and not done & queued
        assert fleet.redis.hlen("unacked") == 0  # nothing waits for a visibility timeout
        assert not _held_task_ids(fleet, job_id)

        # and another worker finishes the job, every item once
        fleet.start_worker(concurrency=1)
        fleet.wait_for_state(job_id, "done", JOB_DONE_S)
        chaos.assert_exactly_once(fleet, bucket, job_id, keys)


def test_requeue_sends_a_dead_workers_items_at_once(fleet: Fleet) -> None:
    # Given a job whose only worker died mid-task (its lease has a minute to run)
    bucket, keys, first, job_id = chaos.job_in_flight(fleet, "requeue")
    first.kill()

    # When an operator who cannot wait requeues the job, and a worker is there to take it
    killed_at = time.monotonic()
    output = fleet.cli("requeue", job_id).stdout
    fleet.start_worker(concurrency=1)
    fleet.wait_for_state(job_id, "done", JOB_DONE_S)
    print(
        f"\nrequeue: the job finished {time.monotonic() - killed_at:.1f} s after the kill ({output.strip()})"
    )

    # Then the dead worker's items ran again, each counted once
    assert "outstanding items sent again" in output
    chaos.assert_exactly_once(fleet, bucket, job_id, keys)
    assert not _held_task_ids(fleet, job_id)  # nothing left for the lease to send a second time
