"""Run one task message: every item gets exactly one recorded outcome.  Plain code; Celery calls it.

Failures are per item.  A permanent failure is that item's outcome and its neighbours go on.  A
transient one (S3 throttled, a write raced) leaves the item without an outcome and in
`BatchResult.retry`: the task sends only those items again, later.  A soft time limit fails the
running item as `timeout` and hands the items not yet done to `BatchResult.resend`, because the hard
limit is only a grace period away; so does a warm shutdown, before the next item starts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import cached_property, partial

from cutout_fleet.catalog import Catalog
from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import ConfigError, CutoutError, FailedAfterWork, ModelError, TransientError
from cutout_fleet.items import ItemRef
from cutout_fleet.messages import TaskMessage
from cutout_fleet.options import options_hash
from cutout_fleet.outcomes import Outcome
from cutout_fleet.safety import NO_SAFETY, level_stages, safety_fingerprint
from cutout_fleet.state import CANCELLED, STOPPED, JobStore
from cutout_fleet.storage import Storage, parse_location
from cutout_fleet.worker.caption_batches import caption_batch
from cutout_fleet.worker.interrupts import ItemTimeLimit
from cutout_fleet.worker.pipeline import Cutter, ItemContext, MaskPredictor, process_item
from cutout_fleet.worker.read_ahead import ReadAhead
from cutout_fleet.worker.safety.stages import SafetyStages
from cutout_fleet.worker.scope import scope_problem
from cutout_fleet.worker.sessions import SessionPool
from cutout_fleet.worker.verdicts import SafetyContext, gate_policy

log = logging.getLogger(__name__)

# After this many items in a row fail transiently the service is down, not the item: the rest of the
# task is deferred untried with them instead of each waiting out its own retries.
MAX_CONSECUTIVE_TRANSIENT = 3


@dataclass
class BatchRuntime:
    """Per-process collaborators: created once per process (after fork), reused by every task."""

    settings: Settings
    catalog: Catalog
    store: JobStore
    sessions: SessionPool
    open_storage: Callable[[str], Storage]  # URI -> Storage, cached per process
    on_job_complete: Callable[[str, str], None]  # (job_id, queue)
    # True once this worker began a warm shutdown: items not started go back to the queue.
    draining: Callable[[], bool] = lambda: False
    # Local folders are for `cutout run`; a fleet worker refuses a message that names one.
    local_folders: bool = False
    # Runs the image pipeline in place of `sessions` (`cutout run`: a child process); None: in this process.
    cutter: Cutter | None = None

    @cached_property
    def safety_stages(self) -> SafetyStages:
        """This process's safety detectors (loaded on first use, by the first item with a safety level)."""
        return SafetyStages(self.settings)


@dataclass
class BatchResult:
    recorded: int = 0
    already_done: int = 0
    dropped: int = 0  # items of a cancelled job, or of an expired one
    parked: int = 0  # items of a stopped job, held for `resume`
    timed_out: int = 0
    retry: list[str] = field(default_factory=list)  # keys to try again later (transient failures)
    retry_error: TransientError | None = None  # the last transient error, for logs and reports
    resend: list[str] = field(default_factory=list)  # keys not reached: soft time limit, or shutdown
    handed_back: int = 0  # of `resend`: items not started because the worker is shutting down


@dataclass
class _Batch:
    """One message being worked through: its items, its context and what happened so far."""

    message: TaskMessage
    runtime: BatchRuntime
    queue: str
    ctx: ItemContext | None
    setup_error: CutoutError | None
    result: BatchResult = field(default_factory=BatchResult)
    attempt: int = 0  # the attempt the gate just counted for the item about to run

    def item(self, key: str) -> ItemRef:
        return ItemRef(self.message.bucket, key, (self.message.versions or {}).get(key))

    def output_key(self, key: str) -> str:
        m = self.message
        return m.output_key(key, parse_location(m.source).prefix, parse_location(m.out).prefix)

    def record(self, outcome: Outcome) -> None:
        was_recorded, completed = self.runtime.store.record(self.message.job_id, outcome)
        self.result.recorded += was_recorded
        if was_recorded and outcome.status == "succeeded":
            self.runtime.store.add_rate_sample(outcome.model, sum(outcome.timings_ms.values()))
        if completed:
            self.runtime.on_job_complete(self.message.job_id, self.queue)

    def fail(self, key: str, code: str, reason: str) -> None:
        self.record(failure(self.message, self.item(key), self.output_key(key), code, reason))


def failure(message: TaskMessage, item: ItemRef, output_key: str, code: str, reason: str) -> Outcome:
    """A failed outcome for an item of this message, with the message's per-key options (its output
    was not written)."""
    return Outcome(
        item.key,
        "failed",
        output_key,
        message.options.model,
        error_code=code,
        error=reason,
        bucket=item.bucket or None,
        version=item.version,
        options=dict(message.item_options) if message.item_options else None,
        output_written=False,
    )


def _predictor(runtime: BatchRuntime, model: str) -> Callable[[], MaskPredictor]:
    def load() -> MaskPredictor:
        try:
            return runtime.sessions.get(model)
        except ConfigError as exc:
            # A model this worker cannot load fails the item with a reason instead of looping.
            raise ModelError(str(exc), code="model_error") from exc

    return load


def _safety_context(message: TaskMessage, runtime: BatchRuntime) -> SafetyContext | None:
    options = message.options
    if options.safety == NO_SAFETY:
        return None
    settings = runtime.settings.safety
    return SafetyContext(
        level=options.safety,
        policy=gate_policy(settings.policy_file),
        on_block=options.on_block,
        on_review=options.on_review,
        out_prefix=parse_location(message.out).prefix,
        quarantine_prefix=settings.quarantine_prefix,
        # A cutter (`cutout run`'s child process) runs the stages itself, with the cutout.
        inspect=(
            partial(runtime.safety_stages.run, options.safety, attributes=options.attributes)
            if runtime.cutter is None
            else None
        ),
    )


def _item_context(message: TaskMessage, runtime: BatchRuntime) -> ItemContext:
    spec = runtime.catalog.get(message.options.model)
    safety = _safety_context(message, runtime)
    hub_pins = runtime.settings.safety.hub_pins()
    fingerprint = safety_fingerprint(safety.level, safety.policy, hub_pins=hub_pins) if safety else None
    return ItemContext(
        source=runtime.open_storage(message.source),
        out=runtime.open_storage(message.out),
        options=message.options,
        options_hash=options_hash(message.options, spec.checksum, fingerprint),
        limits=runtime.settings.limits,
        predictor=_predictor(runtime, message.options.model),
        force=message.force,
        item_options=dict(message.item_options) if message.item_options else None,
        cutter=runtime.cutter,
        safety=safety,
        prefetched={} if _makes_caption_batches(safety, runtime) else None,
    )


def _makes_caption_batches(safety: SafetyContext | None, runtime: BatchRuntime) -> bool:
    # In this process only (a cutter runs its stages in its own), for a level with a caption.
    return (
        safety is not None
        and "caption" in level_stages(safety.level)
        and runtime.cutter is None
        and runtime.settings.safety.caption_batch > 1
    )


def _open_batch(message: TaskMessage, runtime: BatchRuntime, queue: str) -> _Batch:
    try:
        return _Batch(message, runtime, queue, _item_context(message, runtime), None)
    except CutoutError as exc:
        return _Batch(message, runtime, queue, None, exc)


def run_batch(message: TaskMessage, runtime: BatchRuntime, queue: str) -> BatchResult:
    """Give each item of the message its outcome, or hand it back in `retry` / `resend`."""
    if problem := _out_of_scope(message, runtime):
        runtime.store.add_rejected("", problem, message.model_dump_json()[:500])
        log.error("refused a task of job %s: %s", message.job_id, problem)
        return BatchResult(dropped=len(message.keys))
    batch = _open_batch(message, runtime, queue)
    keys = list(message.keys)
    ahead = _read_ahead(batch, keys)
    try:
        _run_items(batch, keys, ahead)
    finally:
        if ahead is not None:
            ahead.close()
    return batch.result


def _read_ahead(batch: _Batch, keys: list[str]) -> ReadAhead | None:
    """The task's read-ahead thread (worker/read_ahead.py), when it has more than one item to read and
    no caption micro-batches (which read ahead themselves)."""
    ctx = batch.ctx
    if (
        ctx is None
        or ctx.prefetched is not None
        or len(keys) < 2
        or not batch.runtime.settings.worker.read_ahead
    ):
        return None
    ahead = ReadAhead(ctx)
    batch.ctx = replace(ctx, read_ahead=ahead.take)
    return ahead


def _run_items(batch: _Batch, keys: list[str], ahead: ReadAhead | None) -> None:
    consecutive_transient = 0
    for index, key in enumerate(keys):
        if consecutive_transient >= MAX_CONSECUTIVE_TRANSIENT:
            batch.result.retry.extend(keys[index:])
            break
        if batch.runtime.draining():
            batch.result.resend.extend(keys[index:])
            batch.result.handed_back = len(keys) - index
            break
        gate = _gate(batch, key, keys[index:])
        if gate is Gate.STOP:
            break
        if gate is Gate.SETTLED:
            if ahead is not None:
                ahead.discard(key)
            continue
        try:
            _caption_ahead(batch, keys[index:])
            # Not while the store is failing: the next item would only fail ahead of time as well.
            if ahead is not None and index + 1 < len(keys) and consecutive_transient == 0:
                ahead.start(batch.item(keys[index + 1]), batch.output_key(keys[index + 1]))
            transient = _run_item(batch, key)
        except ItemTimeLimit:
            _on_time_limit(batch, key, keys[index + 1 :])
            break
        consecutive_transient = consecutive_transient + 1 if transient else 0


def _out_of_scope(message: TaskMessage, runtime: BatchRuntime) -> str | None:
    """Why the message reaches outside its job's locations (see scope.py); an unknown job is the gate's."""
    job = runtime.store.get(message.job_id)
    return None if job is None else scope_problem(message, job, local_folders=runtime.local_folders)


class Gate(Enum):
    WORK = "work"  # process the item
    SETTLED = "settled"  # already recorded (a redelivery), or failed as poison just now
    STOP = "stop"  # the job is cancelled, stopped or unknown: the rest is dropped or parked


def _gate(batch: _Batch, key: str, rest: list[str]) -> Gate:
    """Before every item, one round trip: the job's state, whether the item is recorded, its attempt.

    So `cancel` and the failure guard take effect within one image, and a redelivered task skips
    what its twin did.
    """
    store, job_id, result = batch.runtime.store, batch.message.job_id, batch.result
    start = store.begin_item(job_id, batch.item(key).id)
    if start.state is None:
        # An unknown (or expired) job: refused like a malformed message, recorded, never run.
        reason = f"task for unknown or expired job {job_id!r}: {len(rest)} keys dropped"
        store.add_rejected("", reason, batch.message.model_dump_json()[:500])
        log.warning("%s", reason)
        result.dropped += len(rest)
        return Gate.STOP
    if start.state == CANCELLED:
        log.info("dropping %d keys of cancelled job %s", len(rest), job_id)
        result.dropped += len(rest)
        return Gate.STOP
    if start.state == STOPPED:
        held = batch.message.model_copy(update={"keys": rest})
        store.park(job_id, json.dumps(held.model_dump(mode="json")))
        result.parked += len(rest)
        return Gate.STOP
    if start.recorded:
        result.already_done += 1  # a redelivered task: this item's outcome is already counted
        return Gate.SETTLED
    max_attempts = batch.runtime.settings.worker.max_attempts
    if start.attempt > max_attempts:
        _fail_as_poison(batch, key, start.attempt - 1, max_attempts)
        return Gate.SETTLED
    batch.attempt = start.attempt
    return Gate.WORK


def _caption_ahead(batch: _Batch, rest: list[str]) -> None:
    """Before `rest[0]` runs, caption it together with the next items of the task that have no
    outcome yet, in one micro-batch (worker/caption_batches.py).  A first attempt only: an item
    tried again is captioned alone, so one that crashes a batch cannot take its neighbours down."""
    ctx = batch.ctx
    if ctx is None or ctx.prefetched is None or batch.attempt != 1 or rest[0] in ctx.prefetched:
        return
    store, job_id = batch.runtime.store, batch.message.job_id
    size = batch.runtime.settings.safety.caption_batch
    chosen = [rest[0]]
    for key in rest[1:]:
        if len(chosen) >= size:
            break
        if key not in ctx.prefetched and not store.is_recorded(job_id, batch.item(key).id):
            chosen.append(key)
    try:
        captioner = batch.runtime.safety_stages.captioner()
    except ConfigError:
        return  # each item's caption stage records it as missing, with this reason
    caption_batch([(batch.item(key), batch.output_key(key)) for key in chosen], ctx, captioner.caption)


def _fail_as_poison(batch: _Batch, key: str, attempts: int, max_attempts: int) -> None:
    reason = (
        f"{key}: {attempts} attempts did not finish it (the worker was killed or hung, or the output "
        f"could not be written each time; CUTOUT_WORKER__MAX_ATTEMPTS={max_attempts}); moved to the "
        "job's dead-letter list"
    )
    batch.runtime.store.add_dead_letter(batch.message.job_id, batch.item(key).id, attempts, reason)
    batch.fail(key, "poison", reason)


def _run_item(batch: _Batch, key: str) -> bool:
    """Process one item and record its outcome; True when it failed transiently."""
    if batch.ctx is None:
        batch.fail(key, "model_error", str(batch.setup_error))
        return False
    item = batch.item(key)
    try:
        outcome = process_item(item, batch.output_key(key), batch.ctx)
    except TransientError as exc:
        if not isinstance(exc, FailedAfterWork):
            # Nothing was redone yet: a retry after an S3 blip before the model is not a step toward
            # poison.  A failure after the model counts, or one bad key could re-run it for hours.
            batch.runtime.store.forget_attempt(batch.message.job_id, item.id)
        log.warning("item %s: %s; it will be tried again", item.id, exc)
        batch.result.retry.append(key)
        batch.result.retry_error = exc
        return True
    batch.record(outcome)
    return False


def _on_time_limit(batch: _Batch, key: str, rest: list[str]) -> None:
    """The running item fails with `timeout`; what was not reached goes out again as a new task."""
    reason = f"{key}: took longer than CUTOUT_WORKER__ITEM_TIME_LIMIT_S allows"
    batch.fail(key, "timeout", reason)
    batch.result.timed_out += 1
    batch.result.resend.extend(rest)


def fail_items(
    message: TaskMessage, runtime: BatchRuntime, queue: str, keys: list[str], code: str, reason: str
) -> int:
    """Record a failed outcome for each of these items that has none yet (retries exhausted)."""
    batch = _Batch(message, runtime, queue, None, None)
    for key in keys:
        if not runtime.store.is_recorded(message.job_id, batch.item(key).id):
            batch.fail(key, code, f"{key}: {reason}")
    return batch.result.recorded


def time_out_running(message: TaskMessage, runtime: BatchRuntime, queue: str) -> BatchResult:
    """A soft time limit that fired outside an item (between items, in a store call): the first item
    without an outcome is the one that ran out of time; the others go out again."""
    batch = _Batch(message, runtime, queue, None, None)
    pending = [k for k in message.keys if not runtime.store.is_recorded(message.job_id, batch.item(k).id)]
    if pending:
        _on_time_limit(batch, pending[0], pending[1:])
    return batch.result
