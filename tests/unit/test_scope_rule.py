"""A task message must stay inside its job's locations: the rule a worker checks before any item."""

from __future__ import annotations

import pytest

from cutout_fleet.messages import TaskMessage
from cutout_fleet.options import ImageOptions
from cutout_fleet.state import JobRecord
from cutout_fleet.worker.scope import scope_problem

JOB = JobRecord(
    job_id="j",
    source="s3://in/p/",
    out="s3://out/o",
    model="u2netp",
    queue="cpu",
    options={},
    state="running",
    created_at=0.0,
)
MANIFEST_JOB = JobRecord(**{**JOB.__dict__, "source": "s3://lists/m.csv", "mapping": "full"})


def message(source: str = "s3://in/p/", out: str = "s3://out/o", mapping: str = "relative") -> TaskMessage:
    return TaskMessage(
        job_id="j",
        source=source,
        out=out,
        options=ImageOptions(model="u2netp"),
        keys=["p/a.png"],
        mapping=mapping,
    )


def test_a_message_with_the_jobs_locations_is_in_scope() -> None:
    assert scope_problem(message(), JOB, local_folders=False) is None


@pytest.mark.parametrize(
    ("forged", "why"),
    [
        (message(out="s3://thief/o"), "output"),
        (message(source="s3://other/p/"), "source"),
        (message(mapping="full"), "key mapping"),
        (message(source="/etc/", out="/tmp/x"), "only s3://"),
        (message(out="/tmp/x"), "only s3://"),
    ],
)
def test_a_message_that_leaves_its_jobs_locations_is_refused(forged: TaskMessage, why: str) -> None:
    assert why in (scope_problem(forged, JOB, local_folders=False) or "")


def test_a_manifest_job_reads_bucket_roots_only() -> None:
    assert (
        scope_problem(message("s3://any-bucket/", mapping="full"), MANIFEST_JOB, local_folders=False) is None
    )
    problem = scope_problem(message("s3://any-bucket/p/", mapping="full"), MANIFEST_JOB, local_folders=False)
    assert "not a bucket root" in (problem or "")


def test_cutout_run_may_name_local_folders_of_its_own_job() -> None:
    local = JobRecord(**{**JOB.__dict__, "source": "/data/in", "out": "/data/out"})
    assert scope_problem(message("/data/in", "/data/out"), local, local_folders=True) is None
    assert scope_problem(message("/data/in", "/elsewhere"), local, local_folders=True) is not None
