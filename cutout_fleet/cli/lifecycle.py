"""Commands that change a job's course: cancel, resume, retry, requeue."""

from __future__ import annotations

import click

from cutout_fleet.cli.common import job_store, lease_board, publisher, queue_for, reported, settings_or_exit
from cutout_fleet.cli.group import cli


@cli.command()
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Stop a job for good: workers drop its queued items without working on them."""
    from cutout_fleet.producer.lifecycle import cancel_job

    settings = settings_or_exit()
    with reported():
        job = cancel_job(job_store(settings), publisher(settings), job_id)
    click.echo(
        f"job {job_id} cancelled: {job.finished} of {job.total} items had finished; {job.queued} dropped"
    )


@cli.command()
@click.argument("job_id")
@click.option(
    "--no-guard",
    is_flag=True,
    help="Turn the failure guard off for the rest of this job: for failures that are bad files, "
    "not a broken setup (each still fails alone, with its reason in the report).",
)
def resume(job_id: str, no_guard: bool) -> None:
    """Continue a job that was stopped (by its failure guard), once the cause is fixed."""
    from cutout_fleet.producer.lifecycle import resume_job

    settings = settings_or_exit()
    with reported():
        result = resume_job(
            job_store(settings), publisher(settings), job_id, queue_for(settings), guard=not no_guard
        )
    click.echo(f"job {job_id} {result.job.state}: {result.republished} held items back on the queue")


@cli.command()
@click.argument("job_id")
def retry(job_id: str) -> None:
    """Enqueue only the failed items of a job again (and a stopped job's held items)."""
    from cutout_fleet.producer.lifecycle import retry_job

    settings = settings_or_exit()
    with reported():
        result = retry_job(
            job_store(settings),
            publisher(settings),
            job_id,
            items_per_task=settings.items_per_task,
            queue_for=queue_for(settings),
        )
    click.echo(
        f"job {job_id}: {result.retried} failed items and {result.republished} held items enqueued again "
        f"(state {result.job.state})"
    )


@cli.command()
@click.argument("job_id")
def requeue(job_id: str) -> None:
    """Send a running job's outstanding items again now (those workers hold or reserved, with no
    outcome yet), instead of waiting for a dead worker's lease to run out.  Safe at any time."""
    from cutout_fleet.connections import redis_client
    from cutout_fleet.producer.requeue import requeue_job

    settings = settings_or_exit()
    with reported():
        result = requeue_job(
            job_store(settings), lease_board(settings), redis_client(settings), publisher(settings), job_id
        )
    click.echo(
        f"job {job_id}: {result.items} outstanding items sent again in {result.tasks} tasks "
        f"({result.from_stalled} of them held by workers that stopped answering)"
    )
