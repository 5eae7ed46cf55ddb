"""A task message that reaches outside its job is refused by a real worker: it reads nothing, writes
nothing, and the refusal is recorded in cf:rejected.  (Whoever can write to Redis can push one.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from cutout_fleet.config.settings import WorkerSettings
from cutout_fleet.messages import TaskMessage
from cutout_fleet.options import ImageOptions
from cutout_fleet.producer.publish import CeleryPublisher, producer_app
from tests.support.fleet import Fleet, FleetFactory, sample_catalog

pytestmark = pytest.mark.integration

MODEL = "tiny-u2netp"
JOB_DONE_S = 120.0
REFUSED_S = 60.0


def _finished_job(fleet: Fleet) -> tuple[str, str]:
    """A real job, done: its id and its bucket."""
    bucket = fleet.new_bucket("scope")
    fleet.upload(bucket, "in/", {"a.png": next(iter(sample_catalog().values()))})
    job_id = str(
        fleet.enqueue(f"s3://{bucket}/in/", "--out", f"s3://{bucket}/out", "--model", MODEL)["job_id"]
    )
    fleet.wait_for_state(job_id, "done", JOB_DONE_S)
    return job_id, bucket


def _push(fleet: Fleet, message: TaskMessage) -> None:
    publisher = CeleryPublisher(producer_app(fleet.redis_url), WorkerSettings(), client=fleet.redis)
    publisher.publish(fleet.queue, [message])


def test_a_message_that_names_local_folders_is_refused_and_touches_no_file(
    make_fleet: FleetFactory, tmp_path: Path
) -> None:
    with make_fleet(models=[MODEL]) as fleet:
        fleet.start_worker()
        job_id, _ = _finished_job(fleet)
        secret_dir, drop_dir = tmp_path / "secret", tmp_path / "drop"
        secret_dir.mkdir()
        (secret_dir / "x.png").write_bytes(next(iter(sample_catalog().values())))

        # Given a forged task for that job that reads a local folder and writes another
        forged = TaskMessage(
            job_id=job_id,
            source=str(secret_dir),
            out=str(drop_dir),
            options=ImageOptions(model=MODEL),
            keys=["x.png"],
        )

        # When a worker takes it
        _push(fleet, forged)
        fleet.wait_until(lambda: bool(fleet.store.rejected()), REFUSED_S, lambda: "no refusal recorded")

        # Then it is refused with a reason, and nothing was written
        assert "only s3:// locations" in str(fleet.store.rejected()[0]["reason"])
        assert not drop_dir.exists()


def test_a_message_whose_output_is_not_its_jobs_is_refused(make_fleet: FleetFactory) -> None:
    with make_fleet(models=[MODEL]) as fleet:
        fleet.start_worker()
        job_id, bucket = _finished_job(fleet)
        elsewhere = fleet.new_bucket("elsewhere")

        # Given a forged task for that job that writes into another bucket
        forged = TaskMessage(
            job_id=job_id,
            source=f"s3://{bucket}/in/",
            out=f"s3://{elsewhere}/stolen",
            options=ImageOptions(model=MODEL),
            keys=["in/a.png"],
            force=True,
        )

        # When a worker takes it
        _push(fleet, forged)
        fleet.wait_until(lambda: bool(fleet.store.rejected()), REFUSED_S, lambda: "no refusal recorded")

        # Then it is refused, and the other bucket stays empty
        assert "is not the job's" in str(fleet.store.rejected()[0]["reason"])
        assert fleet.s3.list_objects_v2(Bucket=elsewhere).get("KeyCount", 0) == 0
