"""Run one task message: every key gets exactly one recorded outcome.  Plain code; Celery calls it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from cutout_fleet.catalog import Catalog
from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import ConfigError, CutoutError, ModelError, TransientError
from cutout_fleet.messages import TaskMessage
from cutout_fleet.options import options_hash
from cutout_fleet.outcomes import Outcome, failed
from cutout_fleet.state import CANCELLED, STOPPED, JobStore
from cutout_fleet.storage import Storage, parse_location
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
    dropped: int = 0  # keys of a cancelled job, or of an expired one
    parked: int = 0  # keys of a stopped job, held for `resume`


def _predictor(runtime: BatchRuntime, model: str) -> Callable[[], MaskPredictor]:
    def load() -> MaskPredictor:
        try:
            return runtime.sessions.get(model)
        except ConfigError as exc:
            # A model this worker cannot load fails the item with a reason instead of looping.
            raise ModelError(str(exc), code="model_error") from exc

    return load


def _outcome_context(message: TaskMessage) -> dict[str, object]:
    context: dict[str, object] = {}
    if message.bucket:
        context["bucket"] = message.bucket
    if message.item_options:
        context["options"] = dict(message.item_options)
    return context


def _item_context(message: TaskMessage, runtime: BatchRuntime) -> ItemContext:
    spec = runtime.catalog.get(message.options.model)
    return ItemContext(
        source=runtime.open_storage(message.source),
        out=runtime.open_storage(message.out),
        options=message.options,
        options_hash=options_hash(message.options, spec.checksum),
        limits=runtime.settings.limits,
        predictor=_predictor(runtime, message.options.model),
        force=message.force,
        outcome_context=_outcome_context(message),
    )


def run_batch(message: TaskMessage, runtime: BatchRuntime, queue: str) -> BatchResult:
    """Process each key not yet recorded; TransientError propagates so the caller can retry."""
    store, job_id = runtime.store, message.job_id
    source_prefix = parse_location(message.source).prefix
    out_prefix = parse_location(message.out).prefix
    try:
        ctx: ItemContext | None = _item_context(message, runtime)
        setup_error: CutoutError | None = None
    except CutoutError as exc:
        ctx, setup_error = None, exc
    recorded = already = 0
    max_attempts = runtime.settings.worker.max_attempts
    for index, key in enumerate(message.keys):
        # One round trip before every key: the job's state (so `cancel` and the failure guard take
        # effect within one image), whether a redelivery already recorded it, and its attempt count.
        start = store.begin_item(job_id, key)
        if start.state is None:
            # An unknown (or expired) job: refused like a malformed message, recorded, never run.
            reason = f"task for unknown or expired job {job_id!r}: {len(message.keys) - index} keys dropped"
            store.add_rejected("", reason, message.model_dump_json()[:500])
            log.warning("%s", reason)
            return BatchResult(recorded, already, dropped=len(message.keys) - index)
        if start.state == CANCELLED:
            log.info("dropping %d keys of cancelled job %s", len(message.keys) - index, job_id)
            return BatchResult(recorded, already, dropped=len(message.keys) - index)
        if start.state == STOPPED:
            rest = message.model_copy(update={"keys": message.keys[index:]})
            store.park(job_id, json.dumps(rest.model_dump(mode="json")))
            return BatchResult(recorded, already, parked=len(rest.keys))
        if start.recorded:
            already += 1  # a redelivered task: this key's outcome is already counted
            continue
        out_key = message.output_key(key, source_prefix, out_prefix)
        version = (message.versions or {}).get(key)
        if start.attempt > max_attempts:
            reason = (
                f"{key}: processing it killed or hung the worker {start.attempt - 1} times "
                f"(CUTOUT_WORKER__MAX_ATTEMPTS={max_attempts}); moved to the job's dead-letter list"
            )
            store.add_dead_letter(job_id, key, start.attempt - 1, reason)
            outcome: Outcome = failed(
                key, out_key, message.options.model, "poison", reason, **_outcome_context(message)
            )
        elif ctx is None:
            outcome = failed(
                key,
                out_key,
                message.options.model,
                "model_error",
                str(setup_error),
                **_outcome_context(message),
            )
        else:
            try:
                outcome = process_item(key, out_key, ctx, version=version)
            except TransientError:
                # The worker survived this attempt: a retry after an S3 blip is not a step toward poison.
                store.forget_attempt(job_id, key)
                raise
        was_recorded, completed = store.record(job_id, outcome)
        recorded += was_recorded
        if was_recorded and outcome.status == "succeeded":
            store.add_rate_sample(message.options.model, sum(outcome.timings_ms.values()))
        if completed:
            runtime.on_job_complete(job_id, queue)
    return BatchResult(recorded, already)


def fail_remaining(message: TaskMessage, runtime: BatchRuntime, queue: str, code: str, reason: str) -> int:
    """Give every key without an outcome a failed one (retries exhausted, time limit hit)."""
    source_prefix = parse_location(message.source).prefix
    out_prefix = parse_location(message.out).prefix
    count = 0
    for key in message.keys:
        if runtime.store.is_recorded(message.job_id, key):
            continue
        out_key = message.output_key(key, source_prefix, out_prefix)
        outcome = failed(
            key, out_key, message.options.model, code, f"{key}: {reason}", **_outcome_context(message)
        )
        was_recorded, completed = runtime.store.record(message.job_id, outcome)
        count += was_recorded
        if completed:
            runtime.on_job_complete(message.job_id, queue)
    return count
