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
from cutout_fleet.storage import Storage
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


def process_item(key: str, output_key: str, ctx: ItemContext) -> Outcome:
    """Process one key.  Permanent failures become a failed Outcome; TransientError propagates for retry."""
    timings = Timings()
    model = ctx.options.model
    try:
        with timings.stage("download"):
            source = ctx.source.get(key, max_bytes=ctx.limits.max_bytes)
        cutout = make_cutout(source.data, ctx.predictor(), ctx.options, ctx.limits, timings, name=key)
        metadata = {
            META_SOURCE_ETAG: source.etag,
            META_SOURCE_KEY: key if key.isascii() else key.encode("unicode_escape").decode("ascii"),
            META_MODEL: model,
            META_OPTIONS_HASH: ctx.options_hash,
        }
        with timings.stage("upload"):
            ctx.out.put(output_key, cutout.data, content_type=cutout.content_type, metadata=metadata)
    except TransientError:
        raise
    except PermanentError as exc:
        log.info("item %s failed: %s (%s)", key, exc, exc.code)
        return _with_timings(failed(key, output_key, model, exc.code, str(exc)), timings)
    except MemoryError:
        return _with_timings(
            failed(key, output_key, model, "image_too_large", f"{key}: ran out of memory processing it"),
            timings,
        )
    except Exception as exc:  # a bug must fail this item, not the worker or the rest of the batch
        log.exception("item %s failed unexpectedly", key)
        return _with_timings(
            failed(key, output_key, model, "internal_error", f"{key}: {type(exc).__name__}: {exc}"), timings
        )
    return Outcome(key, "succeeded", output_key, model, timings_ms=timings.ms)


def _with_timings(outcome: Outcome, timings: Timings) -> Outcome:
    return Outcome(**{**outcome.__dict__, "timings_ms": timings.ms})
