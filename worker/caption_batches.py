"""Micro-batches for the caption: a task's next items read and captioned in one `generate` call.

Of the full workflow's models, only Florence-2 takes a batch: the ONNX files of u2netp, BiRefNet, BEN2
and NudeNet fix their batch dimension at 1, and llama-cpp-python's completion runs one sequence.  So
before the first of a few items, the worker checks, reads and decodes each of them, captions them
together, and hands each its caption (and the bytes it read) when its turn comes (`ItemContext.prefetched`).

Only on a first attempt: an item whose attempt is counted again may have crashed its worker inside a
batch, so from then on it is captioned alone, and a bad image ends as `poison` by itself instead of
taking its neighbours with it.  Anything that goes wrong here only leaves the item out of the batch:
its own pass meets the same problem and records it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from PIL import Image

from cutout_fleet.errors import CutoutError
from cutout_fleet.freshness import up_to_date
from cutout_fleet.items import ItemRef
from cutout_fleet.worker.image_plan import image_budget
from cutout_fleet.worker.imaging.decode import decode_image
from cutout_fleet.worker.interrupts import INTERRUPTS
from cutout_fleet.worker.pipeline import ItemContext, Prefetched
from cutout_fleet.worker.safety.captioner import Caption
from cutout_fleet.worker.safety.stages import caption_input

log = logging.getLogger(__name__)

MS_PER_S = 1000.0

# Captions a list of images in one call: `Florence2Captioner.caption`.
CaptionMany = Callable[[Sequence[Image.Image]], list[Caption]]


def caption_batch(items: Sequence[tuple[ItemRef, str]], ctx: ItemContext, caption: CaptionMany) -> int:
    """Check, read and caption these (item, output key) pairs together; what it got goes into
    `ctx.prefetched`.  Returns how many were captioned."""
    assert ctx.prefetched is not None and ctx.safety is not None, "a task without caption micro-batches"
    read: list[tuple[ItemRef, Prefetched, Image.Image]] = []
    for item, output_key in items:
        if item.key in ctx.prefetched:
            continue
        got = _read(item, output_key, ctx)
        if isinstance(got, Prefetched):
            ctx.prefetched[item.key] = got  # up to date: its own pass skips it without asking again
        elif got is not None:
            read.append(got)
    if not read:
        return 0
    started = time.perf_counter()
    try:
        captions = caption([image for _, _, image in read])
    except INTERRUPTS:
        raise
    except Exception as exc:  # each item's own caption stage tries again and records what it meets
        log.warning(
            "a caption micro-batch of %d images failed (%s); captioning them one by one", len(read), exc
        )
        captions = []
    share_ms = (time.perf_counter() - started) * MS_PER_S / len(read)
    for index, (item, early, image) in enumerate(read):
        image.close()
        said = captions[index] if index < len(captions) else None
        timings = {**early.timings_ms, "caption_batch": share_ms}
        ctx.prefetched[item.key] = Prefetched(early.seen, early.source, said, timings)
    return len(captions)


def _read(
    item: ItemRef, output_key: str, ctx: ItemContext
) -> tuple[ItemRef, Prefetched, Image.Image] | Prefetched | None:
    """The item's marker metadata, bytes and caption input; a Prefetched without source when it is up
    to date; None when it cannot be read or decoded (its own pass meets the problem and records it)."""
    assert ctx.safety is not None
    started = time.perf_counter()
    try:
        seen = ctx.out.head_metadata(ctx.safety.verdict_key(output_key))
        if not ctx.force and up_to_date(ctx.source, item.key, seen, ctx.options_hash):
            return Prefetched(seen, None, None, {"check": (time.perf_counter() - started) * MS_PER_S})
        checked = time.perf_counter()
        source = ctx.source.get(item.key, max_bytes=ctx.limits.max_bytes, version=item.version)
        read = time.perf_counter()
        budget = image_budget(ctx.options, ctx.limits)
        decoded = decode_image(source.data, max_pixels=ctx.limits.max_pixels, budget=budget, name=item.key)
    except INTERRUPTS:
        raise
    except (CutoutError, MemoryError) as exc:
        log.info("item %s stays out of the caption micro-batch: %s", item.id, exc)
        return None
    small = caption_input(decoded.rgb)
    if small is not decoded.rgb:
        decoded.rgb.close()
    timings = {
        "check": (checked - started) * MS_PER_S,
        "download": (read - checked) * MS_PER_S,
        "caption_decode": (time.perf_counter() - read) * MS_PER_S,
    }
    return item, Prefetched(seen, source, None, timings), small
