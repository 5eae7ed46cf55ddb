"""`cutout enqueue --dry-run`: what a job would do, without enqueueing anything."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from cutout_fleet.catalog import Catalog
from cutout_fleet.freshness import up_to_date
from cutout_fleet.options import options_hash
from cutout_fleet.producer.enqueue import (
    EnqueueRequest,
    effective_options,
    item_output_key,
    item_ref,
    item_source_uri,
)
from cutout_fleet.producer.listing import ListingChunk, SourceItem
from cutout_fleet.safety import NO_SAFETY, GatePolicy, safety_fingerprint, verdict_key
from cutout_fleet.state import Claim, JobSpec, RedisJobStore
from cutout_fleet.state.redis_keys import DRY_RUN_JOB_PREFIX
from cutout_fleet.storage import Storage

SAMPLE_SIZE = 10
HEAD_THREADS = 16


@dataclass
class DryRunReport:
    images: int = 0
    ignored: int = 0
    total_bytes: int = 0
    unknown_sizes: int = 0
    collisions: int = 0
    already_done: int = 0
    to_process: int = 0
    sample: list[dict[str, str]] = field(default_factory=list)
    collision_sample: list[dict[str, str]] = field(default_factory=list)
    median_item_s: float | None = None
    live_processes: int | None = None
    estimated_s: float | None = None
    estimate_note: str = ""
    warnings: list[str] = field(default_factory=list)  # what the fleet check found (a queue with no worker)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _check(
    item: SourceItem,
    request: EnqueueRequest,
    open_storage: Callable[[str], Storage],
    catalog: Catalog,
    policy: GatePolicy | None,
    hub_pins: Mapping[str, str] | None = None,
) -> tuple[bool, int | None]:
    """(already done?, size) for one item: HEADs only, nothing is downloaded."""
    options = effective_options(request, item)
    source = open_storage(item_source_uri(request, item))
    out = open_storage(request.out.uri)
    size, etag = item.size, item.etag
    if size is None:
        meta = source.head_metadata(item.key) or {}
        etag, size = meta.get("etag"), int(meta["size"]) if meta.get("size") else None
    if request.force:
        return False, size
    # With a safety level the verdict is the item's "up to date" marker (worker/verdicts.py).
    fingerprint = (
        safety_fingerprint(options.safety, policy, hub_pins=hub_pins) if policy is not None else None
    )
    digest = options_hash(options, catalog.get(options.model).checksum, fingerprint)
    output_key = item_output_key(request, item, options)
    existing = out.head_metadata(output_key if options.safety == NO_SAFETY else verdict_key(output_key))
    return up_to_date(source, item.key, existing, digest, source_etag=etag), size


def dry_run(
    request: EnqueueRequest,
    chunks: Iterable[ListingChunk],
    store: RedisJobStore,
    open_storage: Callable[[str], Storage],
    catalog: Catalog,
    *,
    live_processes: int | None,
    policy: GatePolicy | None = None,
    hub_pins: Mapping[str, str] | None = None,
) -> DryRunReport:
    """Walk the same items enqueue would, detect collisions exactly and outputs already up to date."""
    report = DryRunReport()
    scratch = (
        f"{DRY_RUN_JOB_PREFIX}{secrets.token_hex(6)}"  # collisions use the real claim logic, then vanish
    )
    options = request.options
    store.create(JobSpec(scratch, request.source.uri, request.out.uri, options.model, "none", {}))
    try:
        with ThreadPoolExecutor(HEAD_THREADS) as pool:
            for chunk in chunks:
                fresh = _claim_chunk(chunk, request, store, scratch, report)
                for done, size in pool.map(
                    lambda it: _check(it, request, open_storage, catalog, policy, hub_pins), fresh
                ):
                    report.already_done += done
                    if size is None:
                        report.unknown_sizes += 1
                    else:
                        report.total_bytes += size
        report.to_process = report.images - report.collisions - report.already_done
    finally:
        store.delete_job(scratch)
    _estimate(report, store, options.model, live_processes)
    return report


def _claim_chunk(
    chunk: ListingChunk, request: EnqueueRequest, store: RedisJobStore, scratch: str, report: DryRunReport
) -> list[SourceItem]:
    """Claim the chunk's outputs in the scratch job and count collisions; returns the other items."""
    report.ignored += chunk.ignored
    resolved = [
        (item, item_output_key(request, item, effective_options(request, item))) for item in chunk.images
    ]
    claims = store.claim_outputs(scratch, [(item_ref(request, item).id, out) for item, out in resolved])
    fresh = []
    for (item, out_key), (claim, owner) in zip(resolved, claims, strict=True):
        report.images += 1
        if len(report.sample) < SAMPLE_SIZE:
            report.sample.append({"key": item.key, "output_key": out_key})
        if claim is Claim.COLLISION:
            report.collisions += 1
            if len(report.collision_sample) < SAMPLE_SIZE:
                report.collision_sample.append({"key": item.key, "output_key": out_key, "owner": owner or ""})
        else:
            fresh.append(item)
    return fresh


def _estimate(report: DryRunReport, store: RedisJobStore, model: str, live_processes: int | None) -> None:
    median_ms = store.median_item_ms(model)
    report.live_processes = live_processes
    if median_ms is None:
        report.estimate_note = (
            f"no measurement yet: no worker of this fleet has processed a {model} image in the last week"
        )
        return
    report.median_item_s = round(median_ms / 1000.0, 3)
    if not live_processes:
        report.estimate_note = f"no live worker serves this queue; {report.median_item_s} s/image per process"
        return
    report.estimated_s = round(report.to_process * report.median_item_s / live_processes, 1)
    report.estimate_note = (
        f"{report.to_process} images x {report.median_item_s} s (median of recent {model} items) "
        f"/ {live_processes} worker processes"
    )
