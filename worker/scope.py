"""Whether a task message stays inside its job: the worker reads and writes only where the job said.

A message's `source` and `out` come from the queue, which anyone with write access to Redis can fill.
The job record was written by the producer that planned the job, so a message must agree with it:
the same output location and key mapping, and a source that is the job's (a listing job) or a bucket
root (a manifest job, which reads each entry's bucket).  Fleet workers read and write S3 alone: a local
path in a message is refused there, whatever the record says.
"""

from __future__ import annotations

from cutout_fleet.errors import CutoutError
from cutout_fleet.messages import TaskMessage
from cutout_fleet.state import JobRecord
from cutout_fleet.storage import parse_location


def scope_problem(message: TaskMessage, job: JobRecord, *, local_folders: bool) -> str | None:
    """Why this message may not run for this job, or None when it stays inside it."""
    try:
        source, out = parse_location(message.source), parse_location(message.out)
    except CutoutError as exc:
        return f"unreadable location in the message ({exc})"
    if not local_folders and (source.scheme != "s3" or out.scheme != "s3"):
        return (
            f"a fleet worker reads and writes only s3:// locations, not {message.source!r} -> {message.out!r}"
        )
    if message.out != job.out:
        return f"output {message.out!r} is not the job's ({job.out!r})"
    if message.mapping != job.mapping:
        return f"key mapping {message.mapping!r} is not the job's ({job.mapping!r})"
    if job.mapping == "relative":
        if message.source != job.source:
            return f"source {message.source!r} is not the job's ({job.source!r})"
    elif source.scheme != "s3" or source.prefix:
        return f"source {message.source!r} is not a bucket root, as a manifest job's sources are"
    return None
