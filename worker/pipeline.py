"""One item end to end: download -> decode -> [safety stages] -> model -> refine -> background -> encode
-> upload (and, with a safety level, the verdict JSON and its decision's consequence: worker/verdicts.py).

`make_cutout` is the image pipeline (bytes in, bytes out, no storage); `process_item` adds the
object store around it and turns every failure of the item into an Outcome, except a TransientError
(retried by the caller) and a time limit (see interrupts.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from PIL import Image

from cutout_fleet.config.settings import ImageLimits
from cutout_fleet.errors import FailedAfterWork, PermanentError, TransientError
from cutout_fleet.freshness import up_to_date
from cutout_fleet.items import ItemRef
from cutout_fleet.keys import mask_key
from cutout_fleet.options import ImageOptions
from cutout_fleet.outcomes import Outcome, Status
from cutout_fleet.storage import Storage, StoredObject
from cutout_fleet.worker.image_plan import finish_spec, image_budget
from cutout_fleet.worker.imaging.decode import decode_image
from cutout_fleet.worker.imaging.encode import CONTENT_TYPES, encode_image, encode_mask
from cutout_fleet.worker.imaging.finish import Finished, Framing, finish
from cutout_fleet.worker.imaging.mask import alpha_at_size, refine_alpha
from cutout_fleet.worker.interrupts import INTERRUPTS
from cutout_fleet.worker.outputs import MASK_CONTENT_TYPE, item_metadata, put_outputs
from cutout_fleet.worker.safety.captioner import Caption
from cutout_fleet.worker.safety.stages import StageRun
from cutout_fleet.worker.verdicts import SafetyContext, Written, write_with_verdict

log = logging.getLogger(__name__)


class MaskPredictor(Protocol):
    def predict(self, image: Image.Image) -> np.ndarray: ...


class Cutter(Protocol):
    """`make_cutout` with the options' model, run elsewhere (`cutout run`: in a child process it can stop)."""

    def __call__(
        self, data: bytes, options: ImageOptions, limits: ImageLimits, timings: Timings, *, name: str
    ) -> Cutout: ...


@dataclass
class Timings:
    ms: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = round((time.perf_counter() - start) * 1000.0, 2)


@dataclass(frozen=True)
class Cutout:
    data: bytes  # the output: the cutout, or the mask with `--output mask`
    content_type: str
    width: int
    height: int
    safety: StageRun | None = None  # the safety stages' results, when the job asked for a level
    mask: bytes | None = None  # `--output both`: the mask PNG written beside the cutout
    framing: Framing | None = None  # what framing did, when the job crops or places on a canvas


# Runs a job's safety stages on the decoded source (RGB, EXIF-oriented): `SafetyStages.run` for a level,
# with the image's caption when a micro-batch already made it (worker/caption_batches.py).
class Inspector(Protocol):
    def __call__(self, image: Image.Image, *, caption: Caption | None = None) -> StageRun: ...


def make_cutout(
    data: bytes,
    predictor: MaskPredictor,
    options: ImageOptions,
    limits: ImageLimits,
    timings: Timings,
    *,
    name: str = "image",
    inspect: Inspector | None = None,
    caption: Caption | None = None,
) -> Cutout:
    """The image pipeline on bytes; raises PermanentError for inputs that cannot be processed.
    `inspect`, when given, runs the safety stages on the decoded source before the model.

    Each full-size intermediate is dropped as soon as the next stage has what it needs: the peak is the
    decoded RGB, the alpha and the RGBA cutout together (worker/imaging/budget.py has the figures).
    """
    with timings.stage("decode"):
        budget = image_budget(options, limits)
        decoded = decode_image(data, max_pixels=limits.max_pixels, budget=budget, name=name)
    rgb, source_alpha = decoded.rgb, decoded.alpha
    del decoded
    stage_run = None
    if inspect is not None:
        with timings.stage("safety"):
            stage_run = inspect(rgb, caption=caption)
    with timings.stage("model"):
        small_mask = predictor.predict(rgb)
    with timings.stage("mask"):
        alpha = alpha_at_size(small_mask, rgb.size, sensitivity=options.sensitivity)
        alpha = refine_alpha(
            alpha,
            mask_blur_px=options.mask_blur_px,
            mask_offset_px=options.mask_offset_px,
            source_alpha=source_alpha,
        )
        del source_alpha
        finished = finish(rgb, alpha, finish_spec(options), name=name)
        del alpha
        rgb.close()
    with timings.stage("encode"):
        return _encoded(finished, options, limits, stage_run)


def _encoded(
    finished: Finished, options: ImageOptions, limits: ImageLimits, stage_run: StageRun | None
) -> Cutout:
    mask = None
    if finished.mask is not None:
        mask = encode_mask(
            finished.mask, png_compress_level=limits.png_compress_level, png_strategy=limits.png_strategy
        )
        height, width = finished.mask.shape
    if finished.image is None:
        assert mask is not None, "an output with neither a cutout nor a mask"
        return Cutout(mask, MASK_CONTENT_TYPE, width, height, stage_run, framing=finished.framing)
    image = finished.image
    quality = options.quality
    encoded = encode_image(
        image,
        options.format,
        webp_quality=quality or limits.webp_quality,
        png_compress_level=limits.png_compress_level,
        png_strategy=limits.png_strategy,
        jpeg_quality=quality or limits.jpeg_quality,
    )
    width, height = image.size
    image.close()
    content_type = CONTENT_TYPES[options.format]
    return Cutout(encoded, content_type, width, height, stage_run, mask=mask, framing=finished.framing)


@dataclass(frozen=True)
class Prefetched:
    """An item a caption micro-batch got to first: what it saw, read and said (worker/caption_batches.py)."""

    seen: dict[str, str] | None  # the "up to date" marker's metadata (the ETag a rewrite is conditional on)
    source: StoredObject | None  # None: the check found the output up to date, so nothing was read
    caption: Caption | None  # None: the batch could not caption it; the item's own stage will try
    timings_ms: dict[str, float]


@dataclass(frozen=True)
class ItemContext:
    """What every item of one task shares."""

    source: Storage
    out: Storage
    options: ImageOptions
    options_hash: str
    limits: ImageLimits
    predictor: Callable[[], MaskPredictor]  # lazily: a task whose items all fail early loads nothing
    force: bool = False
    # Per-key options that differ from the job's, carried into each Outcome so `retry` can rebuild the task.
    item_options: dict[str, object] | None = None
    cutter: Cutter | None = None  # None: `make_cutout` in this process, with `predictor`
    safety: SafetyContext | None = None  # the job asked for a safety level (options.safety)
    # Items whose source a caption micro-batch already read and captioned, by key (caption_batches.py);
    # None: this task makes no micro-batches.
    prefetched: dict[str, Prefetched] | None = None
    # What the task's read-ahead thread read for a key, or None (worker/read_ahead.py); None: no read-ahead.
    read_ahead: Callable[[str], Prefetched | None] | None = None

    def outcome(
        self,
        item: ItemRef,
        output_key: str | None,
        status: Status,
        timings_ms: dict[str, float] | None = None,
        *,
        code: str | None = None,
        error: str | None = None,
        written: Written | None = None,
        cutout: Cutout | None = None,
    ) -> Outcome:
        framing = cutout.framing if cutout is not None else None
        return Outcome(
            item.key,
            status,
            output_key,
            self.options.model,
            error_code=code,
            error=error,
            timings_ms=timings_ms or {},
            bucket=item.bucket or None,
            version=item.version,
            options=self.item_options,
            # A failed item never reaches a successful write: its output (if any) is not this job's.
            output_written=False if status == "failed" else None,
            verdict_key=written.verdict_key if written else None,
            decision=written.decision if written else None,
            mask_key=mask_key(output_key) if output_key and self._mask_beside(status) else None,
            fill_reached=framing.fill_reached if framing else None,
            scale=round(framing.scale, 4) if framing else None,
            no_subject=True if framing and framing.no_subject else None,
        )

    def _mask_beside(self, status: Status) -> bool:
        return self.options.output == "both" and status != "failed"


def _cut_out(
    item: ItemRef, output_key: str, ctx: ItemContext, timings: Timings
) -> tuple[Status, Written | None, Cutout | None]:
    # With a safety level the verdict is the "up to date" marker: a dropped cutout leaves no output.
    marker_key = ctx.safety.verdict_key(output_key) if ctx.safety else output_key
    early = ctx.prefetched.pop(item.key, None) if ctx.prefetched is not None else None
    if early is None and ctx.read_ahead is not None:
        early = ctx.read_ahead(item.key)
    if early is not None:
        # A micro-batch checked, read and captioned it moments ago: its share of that work counts here.
        timings.ms.update(early.timings_ms)
        if early.source is None:
            return "skipped", ctx.safety.recorded(ctx.out, output_key) if ctx.safety else None, None
        seen, source, caption = early.seen, early.source, early.caption
    else:
        with timings.stage("check"):
            seen = ctx.out.head_metadata(marker_key)  # also the ETag a rewrite is conditional on
            if not ctx.force and up_to_date(ctx.source, item.key, seen, ctx.options_hash):
                return "skipped", ctx.safety.recorded(ctx.out, output_key) if ctx.safety else None, None
        with timings.stage("download"):
            source = ctx.source.get(item.key, max_bytes=ctx.limits.max_bytes, version=item.version)
        caption = None
    inspect = ctx.safety.inspect if ctx.safety else None
    if ctx.cutter is None:
        cutout = make_cutout(
            source.data,
            ctx.predictor(),
            ctx.options,
            ctx.limits,
            timings,
            name=item.key,
            inspect=inspect,
            caption=caption,
        )
    else:
        cutout = ctx.cutter(source.data, ctx.options, ctx.limits, timings, name=item.key)
    metadata = item_metadata(source.etag, item.key, ctx.options, ctx.options_hash, cutout.framing)
    with timings.stage("upload"):
        try:
            if ctx.safety is None:
                put_outputs(
                    ctx.out,
                    output_key,
                    cutout,
                    metadata=metadata,
                    seen=seen,
                    source_etag=source.etag,
                    options_hash=ctx.options_hash,
                )
                return "succeeded", None, cutout
            assert cutout.safety is not None, "a job with a safety level ran no safety stages"
            written = write_with_verdict(
                ctx.safety,
                ctx.out,
                item,
                output_key,
                cutout,
                cutout.safety,
                metadata,
                seen,
                source.etag,
                ctx.options_hash,
                timings.ms,
            )
            return "succeeded", written, cutout
        except TransientError as exc:
            raise FailedAfterWork(str(exc)) from exc


def process_item(item: ItemRef, output_key: str, ctx: ItemContext) -> Outcome:
    """Process one item.  Permanent failures become a failed Outcome; TransientError propagates for retry."""
    timings = Timings()
    try:
        status, written, cutout = _cut_out(item, output_key, ctx, timings)
    except TransientError:
        raise
    except INTERRUPTS:
        raise
    except PermanentError as exc:
        log.info("item %s failed: %s (%s)", item.id, exc, exc.code)
        return ctx.outcome(item, output_key, "failed", timings.ms, code=exc.code, error=str(exc))
    except MemoryError:
        message = f"{item.key}: ran out of memory processing it"
        return ctx.outcome(item, output_key, "failed", timings.ms, code="image_too_large", error=message)
    except Exception as exc:  # a bug must fail this item, not the worker or the rest of the batch
        log.exception("item %s failed unexpectedly", item.id)
        message = f"{item.key}: {type(exc).__name__}: {exc}"
        return ctx.outcome(item, output_key, "failed", timings.ms, code="internal_error", error=message)
    # With a verdict, the report names where the cutout went: quarantined elsewhere, or None: dropped.
    reported_key = written.cutout_key if written is not None else output_key
    return ctx.outcome(item, reported_key, status, timings.ms, written=written, cutout=cutout)
