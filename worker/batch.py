"""Run one task message: every key gets exactly one recorded outcome.  Plain code; Celery calls it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import ConfigError, CutoutError, ModelError
from cutout_fleet.jobs import JobStore
from cutout_fleet.keys import output_key
from cutout_fleet.messages import TaskMessage
from cutout_fleet.options import options_hash
from cutout_fleet.outcomes import Outcome, failed
from cutout_fleet.storage import Storage, parse_location
from cutout_fleet.worker.models.catalog import Catalog
from cutout_fleet.worker.pipeline import ItemContext, MaskPredictor, process_item
from cutout_fleet.worker.sessions import SessionPool

log = logging.getLogger(__name__)


@dataclass
class BatchRuntime:
    """Per-process collaborators: created once per process (after fork), reused by every task."""

    settings: Settings
    catalog: Catalog
    store: JobStore
    sessions: SessionPool
    open_storage: Callable[[str], Storage]  # URI -> Storage, cached per process
    on_job_complete: Callable[[str, str], None]  # (job_id, queue)


@dataclass(frozen=True)
class BatchResult:
    recorded: int = 0
    already_done: int = 0
    unknown_job: bool = False


def _predictor(runtime: BatchRuntime, model: str) -> Callable[[], MaskPredictor]:
    def load() -> MaskPredictor:
        try:
            return runtime.sessions.get(model)
        except ConfigError as exc:
            # A model this worker cannot load fails the item with a reason instead of looping.
            raise ModelError(str(exc), code="model_error") from exc

    return load


def run_batch(message: TaskMessage, runtime: BatchRuntime, queue: str) -> BatchResult:
    """Process each key not yet recorded; TransientError propagates so the caller can retry."""
    job = runtime.store.get(message.job_id)
    if job is None:
        log.warning(
            "dropping task for unknown or expired job %s (%d keys)", message.job_id, len(message.keys)
        )
        return BatchResult(unknown_job=True)
    source = runtime.open_storage(message.source)
    out = runtime.open_storage(message.out)
    options = message.options
    source_prefix = parse_location(message.source).prefix
    out_prefix = parse_location(message.out).prefix
    recorded = already = 0
    try:
        spec = runtime.catalog.get(options.model)
        ctx: ItemContext | None = ItemContext(
            source=source,
            out=out,
            options=options,
            options_hash=options_hash(options, spec.checksum),
            limits=runtime.settings.limits,
            predictor=_predictor(runtime, options.model),
        )
        catalog_error = None
    except CutoutError as exc:
        ctx, catalog_error = None, exc
    for key in message.keys:
        out_key = output_key(key, source_prefix, out_prefix, options.extension)
        if runtime.store.is_recorded(message.job_id, key):
            already += 1  # a redelivered task: this key's outcome is already counted
            continue
        if ctx is None:
            outcome: Outcome = failed(key, out_key, options.model, "model_error", str(catalog_error))
        else:
            outcome = process_item(key, out_key, ctx)
        was_recorded, completed = runtime.store.record(message.job_id, outcome)
        recorded += was_recorded
        if completed:
            runtime.on_job_complete(message.job_id, queue)
    return BatchResult(recorded=recorded, already_done=already)


def fail_remaining(message: TaskMessage, runtime: BatchRuntime, queue: str, code: str, reason: str) -> int:
    """Give every key without an outcome a failed one (retries exhausted, time limit hit)."""
    source_prefix = parse_location(message.source).prefix
    out_prefix = parse_location(message.out).prefix
    count = 0
    for key in message.keys:
        if runtime.store.is_recorded(message.job_id, key):
            continue
        out_key = output_key(key, source_prefix, out_prefix, message.options.extension)
        was_recorded, completed = runtime.store.record(
            message.job_id, failed(key, out_key, message.options.model, code, f"{key}: {reason}")
        )
        count += was_recorded
        if completed:
            runtime.on_job_complete(message.job_id, queue)
    return count
