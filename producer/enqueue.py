"""Create a job from a listing: claim output keys, count, and publish tasks of a few keys each."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cutout_fleet.jobs import Claim, JobSpec, JobStore, new_job_id
from cutout_fleet.keys import output_key
from cutout_fleet.messages import TaskMessage
from cutout_fleet.options import ImageOptions
from cutout_fleet.outcomes import failed
from cutout_fleet.producer.listing import ListingChunk, iter_listing_chunks
from cutout_fleet.storage import Location, Storage


class Publisher(Protocol):
    def publish(self, queue: str, messages: Sequence[TaskMessage]) -> None: ...
    def job_complete(self, job_id: str, queue: str) -> None: ...


@dataclass(frozen=True)
class EnqueueRequest:
    source: Location
    out: Location
    options: ImageOptions
    queue: str
    items_per_task: int
    job_id: str | None = None


@dataclass
class EnqueueResult:
    job_id: str
    total: int = 0
    ignored: int = 0
    collisions: int = 0
    tasks: int = 0
    again: int = 0  # keys this job had already enqueued (a second enqueue of the same job)


def enqueue_job(
    request: EnqueueRequest,
    store: JobStore,
    source: Storage,
    publisher: Publisher,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> EnqueueResult:
    """List, claim, count and publish.  The job's total is final only once the listing ends."""
    options = request.options
    job_id = request.job_id or new_job_id()
    # Fail on a wrong bucket or credentials before a job exists, not after.
    next(iter(source.iter_objects(request.source.prefix)), None)
    store.create(
        JobSpec(
            job_id=job_id,
            source=request.source.uri,
            out=request.out.uri,
            model=options.model,
            queue=request.queue,
            options=options.model_dump(mode="json"),
        )
    )
    same_bucket = request.source.scheme == request.out.scheme and request.source.bucket == request.out.bucket
    out_folder = request.out.prefix.strip("/") + "/" if request.out.prefix.strip("/") else None
    inside = same_bucket and out_folder is not None and out_folder.startswith(request.source.prefix)
    exclude = out_folder if inside else None
    counts = EnqueueResult(job_id=job_id)
    try:
        for chunk in iter_listing_chunks(source, request.source.prefix, exclude_prefix=exclude):
            _enqueue_chunk(chunk, request, counts, store, publisher)
            if on_progress:
                on_progress(counts.total)
    finally:
        # Also when the listing breaks off: what was queued still completes and gets its report.
        if store.finalize(job_id):
            # Every item finished while we were still listing (or there were none): report now.
            publisher.job_complete(job_id, request.queue)
    return counts


def _enqueue_chunk(
    chunk: ListingChunk, request: EnqueueRequest, counts: EnqueueResult, store: JobStore, publisher: Publisher
) -> None:
    options, job_id = request.options, counts.job_id
    pairs = [
        (key, output_key(key, request.source.prefix, request.out.prefix, options.extension))
        for key in chunk.images
    ]
    claims = store.claim_outputs(job_id, pairs) if pairs else []
    new_pairs = [pair for pair, (claim, _) in zip(pairs, claims, strict=True) if claim is not Claim.AGAIN]
    # Count before publishing, so a fast worker can never finish more items than the job has.
    store.add_items(job_id, len(new_pairs), chunk.ignored)
    ready: list[str] = []
    for (key, out_key), (claim, owner) in zip(pairs, claims, strict=True):
        if claim is Claim.NEW:
            ready.append(key)
        elif claim is Claim.COLLISION:
            counts.collisions += 1
            message = f"{key} would overwrite {out_key}, already the output of {owner}; rename one of them"
            store.record(job_id, failed(key, out_key, options.model, "output_collision", message))
    messages = [
        TaskMessage(
            job_id=job_id,
            source=request.source.uri,
            out=request.out.uri,
            options=options,
            keys=ready[i : i + request.items_per_task],
        )
        for i in range(0, len(ready), request.items_per_task)
    ]
    if messages:
        publisher.publish(request.queue, messages)
    counts.total += len(new_pairs)
    counts.again += len(pairs) - len(new_pairs)
    counts.ignored += chunk.ignored
    counts.tasks += len(messages)
