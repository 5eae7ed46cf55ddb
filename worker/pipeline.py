"""One item end to end: download -> decode -> model -> refine -> background -> encode -> upload.

`make_cutout` is the image pipeline (bytes in, bytes out, no storage); `process_item` adds the
object store around it and turns every failure of the item into a recorded Outcome.
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
from cutout_fleet.errors import PermanentError, TransientError
from cutout_fleet.options import ImageOptions
from cutout_fleet.outcomes import Outcome, failed
from cutout_fleet.storage import Storage, WriteConflict
from cutout_fleet.worker.imaging.composite import apply_background
from cutout_fleet.worker.imaging.decode import decode_image
from cutout_fleet.worker.imaging.encode import CONTENT_TYPES, encode_image
from cutout_fleet.worker.imaging.mask import refine_mask
from cutout_fleet.worker.imaging.prep import mask_to_size

log = logging.getLogger(__name__)

# S3 user metadata written on every output; idempotent re-runs compare against it.
META_SOURCE_ETAG = "cutout-source-etag"
META_SOURCE_KEY = "cutout-source-key"
META_MODEL = "cutout-model"
META_OPTIONS_HASH = "cutout-options-hash"


class MaskPredictor(Protocol):
    def predict(self, image: Image.Image) -> np.ndarray: ...


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
    data: bytes
    content_type: str
    width: int
    height: int


def make_cutout(
    data: bytes,
    predictor: MaskPredictor,
    options: ImageOptions,
    limits: ImageLimits,
    timings: Timings,
    *,
    name: str = "image",
) -> Cutout:
    """The image pipeline on bytes; raises PermanentError for inputs that cannot be processed."""
    with timings.stage("decode"):
        decoded = decode_image(data, max_pixels=limits.max_pixels, name=name)
    with timings.stage("model"):
        small_mask = predictor.predict(decoded.rgb)
    with timings.stage("mask"):
        mask = mask_to_size(small_mask, decoded.rgb.size)
        alpha = refine_mask(
            mask,
            sensitivity=options.sensitivity,
            mask_blur_px=options.mask_blur_px,
            mask_offset_px=options.mask_offset_px,
            source_alpha=decoded.alpha,
        )
        image = apply_background(decoded.rgb, alpha, options.background_rgb)
    with timings.stage("encode"):
        encoded = encode_image(
            image,
            options.format,
            webp_quality=limits.webp_quality,
            png_compress_level=limits.png_compress_level,
        )
    return Cutout(encoded, CONTENT_TYPES[options.format], image.width, image.height)


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
    # Carried into every Outcome: where the key lives and any per-key options (for reports and retry).
    outcome_context: dict[str, object] = field(default_factory=dict)


def output_matches(existing: dict[str, str] | None, source_etag: str | None, options_hash: str) -> bool:
    """True when an output's metadata says it was made from this source (ETag) with these options."""
    return (
        existing is not None
        and bool(source_etag)
        and existing.get(META_OPTIONS_HASH) == options_hash
        and existing.get(META_SOURCE_ETAG) == source_etag
    )


def up_to_date(
    source: Storage,
    out: Storage,
    key: str,
    output_key: str,
    options_hash: str,
    source_etag: str | None = None,
) -> bool:
    """True when the output was made from this very source (ETag) with these options (hash)."""
    existing = out.head_metadata(output_key)
    if not existing or existing.get(META_OPTIONS_HASH) != options_hash:
        return False  # no need to ask about the source
    if source_etag is None:
        source_etag = (source.head_metadata(key) or {}).get("etag")
    return output_matches(existing, source_etag, options_hash)


def write_output(
    ctx: ItemContext, output_key: str, cutout: Cutout, metadata: dict[str, str], seen: dict[str, str] | None
) -> None:
    """Write only over what was checked: absent -> If-None-Match, present -> If-Match its ETag.

    A redelivered task racing its twin loses the condition; if the winner wrote the same source and
    options, that is success, otherwise the item is retried (WriteConflict is a TransientError).
    """
    try:
        ctx.out.put(
            output_key,
            cutout.data,
            content_type=cutout.content_type,
            metadata=metadata,
            if_none_match=seen is None,
            if_match=None if seen is None else seen.get("etag"),
        )
    except WriteConflict:
        if not output_matches(
            ctx.out.head_metadata(output_key), metadata[META_SOURCE_ETAG], ctx.options_hash
        ):
            raise


def process_item(key: str, output_key: str, ctx: ItemContext, *, version: str | None = None) -> Outcome:
    """Process one key.  Permanent failures become a failed Outcome; TransientError propagates for retry."""
    timings = Timings()
    model = ctx.options.model
    context = {**ctx.outcome_context, **({"version": version} if version else {})}
    try:
        with timings.stage("check"):
            seen = ctx.out.head_metadata(output_key)  # also the ETag a rewrite is conditional on
            if not ctx.force and seen and seen.get(META_OPTIONS_HASH) == ctx.options_hash:
                source_etag = (ctx.source.head_metadata(key) or {}).get("etag")
                if output_matches(seen, source_etag, ctx.options_hash):
                    return Outcome(key, "skipped", output_key, model, timings_ms=timings.ms, **context)  # type: ignore[arg-type]
        with timings.stage("download"):
            source = ctx.source.get(key, max_bytes=ctx.limits.max_bytes, version=version)
        cutout = make_cutout(source.data, ctx.predictor(), ctx.options, ctx.limits, timings, name=key)
        metadata = {
            META_SOURCE_ETAG: source.etag,
            META_SOURCE_KEY: key if key.isascii() else key.encode("unicode_escape").decode("ascii"),
            META_MODEL: model,
            META_OPTIONS_HASH: ctx.options_hash,
        }
        with timings.stage("upload"):
            write_output(ctx, output_key, cutout, metadata, seen)
    except TransientError:
        raise
    except PermanentError as exc:
        log.info("item %s failed: %s (%s)", key, exc, exc.code)
        return failed(key, output_key, model, exc.code, str(exc), timings_ms=timings.ms, **context)
    except MemoryError:
        message = f"{key}: ran out of memory processing it"
        return failed(key, output_key, model, "image_too_large", message, timings_ms=timings.ms, **context)
    except Exception as exc:  # a bug must fail this item, not the worker or the rest of the batch
        log.exception("item %s failed unexpectedly", key)
        message = f"{key}: {type(exc).__name__}: {exc}"
        return failed(key, output_key, model, "internal_error", message, timings_ms=timings.ms, **context)
    return Outcome(key, "succeeded", output_key, model, timings_ms=timings.ms, **context)  # type: ignore[arg-type]
