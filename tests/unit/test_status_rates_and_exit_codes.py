"""`cutout status`: rates that count only cutouts, and the exit codes of --wait / --watch."""

from __future__ import annotations

import pytest

from cutout_fleet.cli.status import exit_code
from cutout_fleet.producer.status import RateMeter, format_job_line
from cutout_fleet.state import JobRecord

T0 = 1_000_000.0


def _job(state: str = "done", **counts: int) -> JobRecord:
    return JobRecord(
        job_id="j",
        source="s3://in/p/",
        out="s3://out/o",
        model="u2netp",
        queue="cpu",
        options={},
        state=state,
        created_at=T0,
        **counts,  # type: ignore[arg-type]
    )


def test_a_job_where_everything_failed_in_milliseconds_has_no_image_rate() -> None:
    # Given a job whose 13 items all failed within 0.15 s of its creation
    job = _job(total=13, failed=13)
    job.first_outcome_at, job.finished_at = T0 + 0.1, T0 + 0.15

    # When its rates are measured
    rates = RateMeter().rates(job, T0 + 1.0)

    # Then no images/min is claimed; the items rate (for the ETA) is over the whole job, not 0.05 s
    assert rates.images_per_min is None
    assert rates.items_per_min == pytest.approx(13 / 0.15 * 60.0)


def test_the_image_rate_counts_only_succeeded_items() -> None:
    # Given a job that cut out 10 images and failed 50 fast over one minute
    job = _job(state="running", total=100, succeeded=10, failed=50)
    job.first_outcome_at = T0

    # When its rates are measured
    rates = RateMeter().rates(job, T0 + 60.0)

    # Then the image rate is 10/min and the drain rate 60/min
    assert rates.images_per_min == pytest.approx(10.0)
    assert rates.items_per_min == pytest.approx(60.0)


def test_outcomes_that_arrive_together_are_timed_from_the_jobs_start() -> None:
    # Given two cutouts that finished 10 ms apart, 5 s after the job was created
    job = _job(total=2, succeeded=2)
    job.first_outcome_at, job.finished_at = T0 + 4.99, T0 + 5.0

    # When the rate is measured
    rates = RateMeter().rates(job, T0 + 6.0)

    # Then it is 2 images in 5 s, not 2 in 10 ms
    assert rates.images_per_min == pytest.approx(24.0)


@pytest.mark.parametrize(
    ("state", "failed", "code"),
    [("done", 0, 0), ("done", 2, 1), ("running", 0, 3), ("cancelled", 0, 4), ("stopped", 5, 4)],
)
def test_wait_and_watch_exit_codes_say_how_the_job_ended(state: str, failed: int, code: int) -> None:
    # Given a job last seen in `state` with `failed` failed items
    # When `status --wait` or `--watch` ends
    # Then the exit code is 0 done, 1 done with failures, 3 still running, 4 cancelled or stopped
    assert exit_code(_job(state, failed=failed)) == code


def test_the_jobs_listing_shows_source_and_output() -> None:
    # Given a job
    # When it is listed
    line = format_job_line(_job(total=3, succeeded=3, final=True))

    # Then one line names its state, counts, source and output
    assert line.startswith("job j: done |") and line.endswith("| s3://in/p/ -> s3://out/o")
