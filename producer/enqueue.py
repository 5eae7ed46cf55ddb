"""Create a job from a stream of items: claim output keys, count, and publish tasks of a few keys each."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

from cutout_fleet.items import ItemRef
from cutout_fleet.keys import KeyMapping, map_output_key, mask_key
from cutout_fleet.messages import TASK_BYTES_BUDGET, TaskMessage, payload_bytes, validate_job_id
from cutout_fleet.options import ImageOptions, make_options
from cutout_fleet.outcomes import Outcome, failed
from cutout_fleet.producer.listing import ListingChunk, SourceItem
from cutout_fleet.state import Claim, FailureGuard, JobSpec, JobStore, new_job_id
from cutout_fleet.storage import Location


class Publisher(Protocol):
    def publish(self, queue: str, messages: Sequence[TaskMessage]) -> None: ...
    def job_complete(self, job_id: str, queue: str) -> None: ...


@dataclass(frozen=True)
class EnqueueRequest:
    source: Location  # the listed prefix, or the manifest's location
    out: Location
    options: ImageOptions  # the job's defaults; manifest lines may override per key
    queue_for: Callable[[str], str]  # model name -> queue
    items_per_task: int
    job_id: str | None = None
    mapping: KeyMapping = "relative"
    force: bool = False
    guard: FailureGuard = field(default_factory=FailureGuard)
    notify_url: str | None = None  # the completion notice's URL (cutout_fleet.notify)

    def __post_init__(self) -> None:
        # Here, so that no caller (`cutout enqueue`, `cutout run`, a library user) creates a job that
        # its first task message would then refuse.
        if self.job_id is not None:
            validate_job_id(self.job_id)

    @cached_property
    def options_json(self) -> str:
        return self.options.model_dump_json()


@dataclass
class EnqueueResult:
    job_id: str
    total: int = 0
    ignored: int = 0
    collisions: int = 0
    tasks: int = 0
    again: int = 0  # keys this job had already enqueued (a second enqueue of the same job)
    queues: set[str] = field(default_factory=set)


def effective_options(request: EnqueueRequest, item: SourceItem) -> ImageOptions:
    if not item.options:
        return request.options
    return make_options(**{**request.options.model_dump(), **item.options})


def item_source_uri(request: EnqueueRequest, item: SourceItem) -> str:
    """The URI a task reads from: the listed prefix, or the manifest line's bucket."""
    return request.source.uri if request.mapping == "relative" else f"s3://{item.bucket}/"


def item_ref(request: EnqueueRequest, item: SourceItem) -> ItemRef:
    """The item as its task will name it: the bucket the task reads from, the key, the pinned version.

    A worker derives the same identity from the message (its source's bucket and `versions`), so
    claims, outcomes and attempts agree on one id per item.  A local folder has no bucket.
    """
    if request.mapping != "relative":
        bucket = item.bucket  # manifests: each line's own bucket, which its task reads from
    else:
        bucket = request.source.bucket if request.source.scheme == "s3" else ""
    return ItemRef(bucket, item.key, item.version)


def item_output_key(request: EnqueueRequest, item: SourceItem, options: ImageOptions) -> str:
    prefix = request.source.prefix if request.mapping == "relative" else ""
    return map_output_key(
        item.key, item.bucket, prefix, request.out.prefix, options.extension, request.mapping
    )


@dataclass
class _Task:
    """A task being filled: its items and an upper bound of its payload's size (`payload_bytes`)."""

    items: list[SourceItem]
    size_bytes: int


# `, "versions": {}`: counted with every pinned item, in case it is the task's first.
_VERSIONS_FIELD_BYTES = 16


def _key_bytes(item: SourceItem) -> int:
    """What one item adds to a task's payload, at most: its key in `keys` (with a separator) and, when
    pinned, its entry in `versions`."""
    key = len(json.dumps(item.key))
    if not item.version:
        return key + 2
    return key + 2 + key + len(json.dumps(item.version)) + 4 + _VERSIONS_FIELD_BYTES


@dataclass
class _Batcher:
    """Fills tasks per (source, options) group so each message stays uniform and full: up to
    `items_per_task` items, and never over TASK_BYTES_BUDGET (long keys make fewer items per task)."""

    request: EnqueueRequest
    publisher: Publisher
    result: EnqueueResult
    pending: dict[tuple[str, str], _Task] = field(default_factory=dict)
    outbox: dict[str, list[TaskMessage]] = field(default_factory=dict)
    _options: dict[str, ImageOptions] = field(default_factory=dict)

    def add(self, item: SourceItem, options: ImageOptions) -> None:
        options_json = (
            self.request.options_json if options is self.request.options else options.model_dump_json()
        )
        self._options.setdefault(options_json, options)
        group = (item_source_uri(self.request, item), options_json)
        task = self.pending.get(group)
        size_bytes = _key_bytes(item)
        if task is not None and task.size_bytes + size_bytes > TASK_BYTES_BUDGET:
            self._flush(group)
            task = None
        if task is None:
            # Measured once per task, with its first item: the job-wide fields and that item's options.
            task = self.pending[group] = _Task([item], payload_bytes(self._message(group, [item]).payload()))
        else:
            task.items.append(item)
            task.size_bytes += size_bytes
        if len(task.items) >= self.request.items_per_task:
            self._flush(group)

    def flush_all(self) -> None:
        for group in list(self.pending):
            self._flush(group)

    def send(self) -> None:
        """Publish the tasks made so far, one pipelined batch per queue."""
        for queue, messages in self.outbox.items():
            self.publisher.publish(queue, messages)
        self.outbox.clear()

    def _message(self, group: tuple[str, str], items: list[SourceItem]) -> TaskMessage:
        source, options_json = group
        versions = {item.key: item.version for item in items if item.version}
        return TaskMessage(
            job_id=self.result.job_id,
            source=source,
            out=self.request.out.uri,
            options=self._options[options_json],
            keys=[item.key for item in items],
            mapping=self.request.mapping,
            versions=versions or None,
            force=self.request.force,
            item_options=items[0].options or None,
        )

    def _flush(self, group: tuple[str, str]) -> None:
        message = self._message(group, self.pending.pop(group).items)
        queue = self.request.queue_for(message.options.model)
        self.outbox.setdefault(queue, []).append(message)
        self.result.tasks += 1
        self.result.queues.add(queue)


def enqueue_job(
    request: EnqueueRequest,
    store: JobStore,
    chunks: Iterable[ListingChunk],
    publisher: Publisher,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> EnqueueResult:
    """Create (or continue) the job, then claim, count and publish chunk by chunk.

    The total is final only once the stream ends; a second enqueue of the same job adds nothing twice.
    """
    options = request.options
    job_id = request.job_id or new_job_id()
    queue = request.queue_for(options.model)
    store.create(
        JobSpec(
            job_id=job_id,
            source=request.source.uri,
            out=request.out.uri,
            model=options.model,
            queue=queue,
            options=json.loads(options.model_dump_json()),
            force=request.force,
            mapping=request.mapping,
            guard=request.guard,
            notify_url=request.notify_url,
        )
    )
    result = EnqueueResult(job_id=job_id)
    batcher = _Batcher(request, publisher, result)
    try:
        for chunk in chunks:
            _enqueue_chunk(chunk, request, result, store, batcher)
            batcher.send()
            if on_progress:
                on_progress(result.total)
        batcher.flush_all()
        batcher.send()
    finally:
        # Also when the stream breaks off: what was queued still completes and gets its report.
        if store.finalize(job_id):
            # Every item finished while we were still listing (or there were none): report now.
            publisher.job_complete(job_id, queue)
    return result


def _enqueue_chunk(
    chunk: ListingChunk, request: EnqueueRequest, result: EnqueueResult, store: JobStore, batcher: _Batcher
) -> None:
    job_id = result.job_id
    resolved = [(item, item_ref(request, item), effective_options(request, item)) for item in chunk.images]
    pairs = [(ref.id, item_output_key(request, item, opts)) for item, ref, opts in resolved]
    # Claims and counts in one step, before publishing: a fast worker can never finish more items
    # than the job has, and a retried call after a dropped connection counts nothing twice.
    claims = store.claim_outputs(job_id, pairs, chunk.ignored)
    new = sum(claim is not Claim.AGAIN for claim, _ in claims)
    result.total += new
    result.ignored += chunk.ignored
    result.again += len(pairs) - new
    taken = _second_outputs_taken(store, job_id, resolved, pairs, claims)
    for (item, ref, opts), (_, out_key), (claim, owner) in zip(resolved, pairs, claims, strict=True):
        if claim is Claim.NEW and ref.id in taken:
            claim, (out_key, owner) = Claim.COLLISION, taken[ref.id]
        if claim is Claim.NEW:
            batcher.add(item, opts)
        elif claim is Claim.COLLISION:
            result.collisions += 1
            store.record(job_id, _collision(ref, out_key, opts.model, owner))


def _second_outputs_taken(
    store: JobStore,
    job_id: str,
    resolved: list[tuple[SourceItem, ItemRef, ImageOptions]],
    pairs: list[tuple[str, str]],
    claims: list[tuple[Claim, str | None]],
) -> dict[str, tuple[str, str | None]]:
    """Claim the mask of each new item that writes one beside its cutout (`--output both`), so a mask
    cannot overwrite another item's output either.  Returns item id -> (mask key, its owner) for the
    masks another item already claimed: those items fail as collisions, counted once."""
    masks = [
        (ref.id, mask_key(out_key))
        for (_, ref, opts), (_, out_key), (claim, _) in zip(resolved, pairs, claims, strict=True)
        if claim is Claim.NEW and opts.output == "both"
    ]
    if not masks:
        return {}
    answers = store.claim_outputs(job_id, masks, count=False)
    return {
        item: (key, owner)
        for (item, key), (claim, owner) in zip(masks, answers, strict=True)
        if claim is Claim.COLLISION
    }


def _collision(ref: ItemRef, out_key: str, model: str, owner: str | None) -> Outcome:
    """The failed outcome of an item whose output another item already claimed (named by its id)."""
    message = f"{ref.key} would overwrite {out_key}, already the output of {owner}; rename one of them"
    return failed(
        ref.key, out_key, model, "output_collision", message, bucket=ref.bucket or None, version=ref.version
    )
