"""Commands that read a job: status (once, --wait, --watch), report, jobs."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from cutout_fleet.cli.common import fail, job_store, lease_board, reported, settings_or_exit
from cutout_fleet.cli.group import cli

if TYPE_CHECKING:
    from cutout_fleet.producer.status import LiveStatus, RateMeter
    from cutout_fleet.state import JobRecord, RedisJobStore
    from cutout_fleet.state.leases import LeaseBoard

WATCH_REFRESH_S = 2.0
# `status --wait` / `--watch` exit codes (docs/commands.md): how the job ended, or that it had not.
EXIT_DONE = 0
EXIT_DONE_WITH_FAILURES = 1
EXIT_STILL_RUNNING = 3  # the wait was interrupted (Ctrl-C) while the job was still running
EXIT_CANCELLED_OR_STOPPED = 4


def exit_code(job: JobRecord) -> int:
    """The exit code of `status --wait` / `--watch` for the job as it was last seen."""
    from cutout_fleet.state.records import CANCELLED, DONE, STOPPED

    if job.state == DONE:
        return EXIT_DONE_WITH_FAILURES if job.failed else EXIT_DONE
    if job.state in (CANCELLED, STOPPED):
        return EXIT_CANCELLED_OR_STOPPED
    return EXIT_STILL_RUNNING


@contextmanager
def _operational() -> Iterator[None]:
    """Errors an operator can fix (a CutoutError, Redis out of reach) end the command with a message."""
    from redis.exceptions import RedisError

    with reported():
        try:
            yield
        except RedisError as exc:
            reason = str(exc).rstrip(".")
            fail(f"cannot reach the job store (Redis): {reason}; check CUTOUT_REDIS_URL and that Redis is up")


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (with --watch: one per refresh).")
@click.option("--wait", is_flag=True, help="Block with a progress bar until the job ends.")
@click.option(
    "--watch", is_flag=True, help="Refresh counts, rate, ETA, queue depths and failures until it ends."
)
@click.option(
    "--recount", is_flag=True, help="First rebuild the counters from per-key state (after a Redis restart)."
)
def status(job_id: str, as_json: bool, wait: bool, watch: bool, recount: bool) -> None:
    """Counts and state of a job.  With --wait or --watch the exit code says how it ended: 0 done, 1 done
    with failed items, 3 interrupted while still running, 4 cancelled or stopped."""
    from cutout_fleet.producer.status import RateMeter, job_status, live_status
    from cutout_fleet.state.records import RUNNING

    settings = settings_or_exit()
    store = job_store(settings)
    queues = [settings.queues.cpu, settings.queues.gpu]
    meter = RateMeter()
    with _operational():
        if recount:
            store.rebuild_counts(job_id)
        job = job_status(store, job_id)
        if watch:
            job = _watch(store, lease_board(settings), job_id, queues, meter, settings.status_poll_s, as_json)
        else:
            if wait and job.state == RUNNING:
                job = _wait_with_progress_bar(store, job, settings.status_poll_s)
            _echo_live(live_status(store, job_id, queues, meter, lease_board(settings)), as_json)
    sys.exit(exit_code(job) if (wait or watch) else 0)


def _echo_live(live: LiveStatus, as_json: bool) -> None:
    from cutout_fleet.producer.status import format_live

    click.echo(json.dumps(live.as_dict(), sort_keys=True) if as_json else format_live(live))


def _watch(
    store: RedisJobStore,
    board: LeaseBoard,
    job_id: str,
    queues: list[str],
    meter: RateMeter,
    poll_s: float,
    as_json: bool,
) -> JobRecord:
    """Print the live status until the job leaves `running` (a fresh screen each time on a terminal).
    Ctrl-C ends the watch, not the job: the job as last seen comes back."""
    from cutout_fleet.producer.status import job_status, live_status
    from cutout_fleet.state.records import RUNNING

    try:
        while True:
            live = live_status(store, job_id, queues, meter, board)
            if not as_json and sys.stdout.isatty():
                click.clear()
            _echo_live(live, as_json)
            if live.job.state != RUNNING:
                return live.job
            time.sleep(max(poll_s, WATCH_REFRESH_S))
    except KeyboardInterrupt:
        return _interrupted(job_status(store, job_id))


def _wait_with_progress_bar(store: RedisJobStore, job: JobRecord, poll_s: float) -> JobRecord:
    from cutout_fleet.producer.status import job_status, wait_for_job

    try:
        with click.progressbar(
            length=max(job.total, 1), label=f"job {job.job_id}", file=sys.stderr, show_pos=True
        ) as bar:

            def update(current: JobRecord) -> None:
                bar.length = max(current.total, 1)
                bar.update(current.finished - bar.pos)

            return wait_for_job(store, job.job_id, poll_s=poll_s, on_update=update)
    except KeyboardInterrupt:
        return _interrupted(job_status(store, job.job_id))


def _interrupted(job: JobRecord) -> JobRecord:
    from cutout_fleet.state.records import RUNNING

    if job.state == RUNNING:
        click.echo(f"\ncutout: stopped waiting; job {job.job_id} is still running", err=True)
    return job


@cli.command()
@click.argument("job_id")
def report(job_id: str) -> None:
    """Print where a finished job's reports are (JSONL, CSV, its manifest, summary), writing them first
    if they are missing."""
    from cutout_fleet.producer.status import job_status
    from cutout_fleet.reports import ReportKeys, write_report
    from cutout_fleet.state.records import CANCELLED, DONE
    from cutout_fleet.storage import open_storage, parse_location

    settings = settings_or_exit()
    store = job_store(settings)
    with _operational():
        job = job_status(store, job_id)
        if job.state not in (DONE, CANCELLED):
            fail(
                f"job {job_id} is still {job.state} ({job.queued} items queued); "
                "the report is written when it ends"
            )
        out = parse_location(job.out)
        if not job.report_key:
            write_report(store, open_storage(out, settings.s3), job_id)
    base = f"s3://{out.bucket}/" if out.scheme == "s3" else out.bucket.rstrip("/") + "/"
    for key in ReportKeys.for_job(out.prefix, job_id).all():
        click.echo(base + key)


@cli.command()
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def jobs(limit: int, as_json: bool) -> None:
    """Recent jobs with their state, counts, source and output."""
    from cutout_fleet.producer.status import format_job_line

    with _operational():
        records = job_store(settings_or_exit()).recent(limit)
    for job in records:
        click.echo(json.dumps(job.as_dict(), sort_keys=True) if as_json else format_job_line(job))
