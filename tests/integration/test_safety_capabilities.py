"""Workers say which safety levels they can run, and a plain CPU worker runs without NudeNet at all.

Against the real Redis, the S3 server and real `cutout worker` processes: one with the safety-light
extra, and one for which `nudenet` and `cv2` cannot be imported (as on the default CPU image).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cutout_fleet.producer.fleet import live_workers, queue_fleet, safety_refusal
from tests.support.fleet import Fleet, FleetFactory, sample_catalog

pytestmark = pytest.mark.integration

MODEL = "tiny-u2netp"
BLOCKED = ("nudenet", "cv2")


@pytest.fixture
def fleet(make_fleet: FleetFactory) -> Iterator[Fleet]:
    with make_fleet(models=[MODEL]) as fleet:
        yield fleet


def without_nudenet(fleet: Fleet, tmp_path: Path) -> dict[str, str]:
    """The fleet's environment with `nudenet` and `cv2` unimportable, as if never installed."""
    for name in BLOCKED:
        package = tmp_path / "blocked" / name
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(f"raise ImportError('{name} is not installed (test blocker)')\n")
    return fleet.env(PYTHONPATH=str(tmp_path / "blocked"))


def advertised(fleet: Fleet) -> dict[str, frozenset[str] | None]:
    return {w.name: w.safety for w in live_workers(fleet.redis_url)}


def test_a_worker_with_nudenet_advertises_light(fleet: Fleet) -> None:
    # Given a worker with the safety-light extra
    worker = fleet.start_worker()

    # When the producer asks the fleet what it can run
    # Then that worker says none and light, and a --safety light job is not refused
    assert advertised(fleet) == {worker.hostname: frozenset({"none", "light"})}
    assert safety_refusal(queue_fleet(fleet.redis_url, fleet.queue), "light") is None


def test_a_plain_cpu_worker_starts_without_nudenet_and_light_jobs_are_refused(
    fleet: Fleet, tmp_path: Path
) -> None:
    # Given a worker for which nudenet and OpenCV cannot be imported
    worker = fleet.start_worker(env=without_nudenet(fleet, tmp_path))

    # Then it started (it answered a ping) and says it runs no safety level but none
    assert worker.answers_ping()
    assert advertised(fleet) == {worker.hostname: frozenset({"none"})}
    # And the producer refuses a --safety light job on its queue, and takes one without safety
    queue = queue_fleet(fleet.redis_url, fleet.queue)
    problem = safety_refusal(queue, "light")
    assert problem is not None and f"none of the 1 live workers on queue {fleet.queue!r}" in problem
    assert safety_refusal(queue, "none") is None


def test_a_plain_cpu_worker_and_the_producer_run_a_job_without_nudenet(fleet: Fleet, tmp_path: Path) -> None:
    # Given a worker and a producer for which nudenet and OpenCV cannot be imported
    env = without_nudenet(fleet, tmp_path)
    fleet.start_worker(env=env)
    bucket = fleet.new_bucket("no-nudenet")
    fleet.upload(bucket, "in/", {"a.png": next(iter(sample_catalog().values()))})

    # When a job without safety is enqueued and run
    job = fleet.enqueue(f"s3://{bucket}/in/", "--out", f"s3://{bucket}/out", "--model", MODEL, env=env)
    status = fleet.wait_for_job(job["job_id"], check=True)

    # Then it succeeds
    assert status["state"] == "done", status
    assert (status["succeeded"], status["failed"]) == (1, 0), fleet.logs()


def test_cutout_enqueue_refuses_safety_light_when_no_live_worker_has_nudenet(
    fleet: Fleet, tmp_path: Path
) -> None:
    # Given a queue whose only live worker has no NudeNet
    fleet.start_worker(env=without_nudenet(fleet, tmp_path))
    bucket = fleet.new_bucket("refuse-light")
    fleet.upload(bucket, "in/", {"a.png": next(iter(sample_catalog().values()))})
    jobs_before = fleet.redis.zcard("cf:jobs")

    # When a --safety light job is enqueued
    result = fleet.cli(
        "enqueue", f"s3://{bucket}/in/", "--out", f"s3://{bucket}/out", "--model", MODEL, "--safety", "light",
        check=False,
    )  # fmt: skip

    # Then it is refused before any job exists, with what to install
    assert result.returncode == 2, result.stderr
    assert "safety-light" in result.stderr
    assert fleet.redis.zcard("cf:jobs") == jobs_before
