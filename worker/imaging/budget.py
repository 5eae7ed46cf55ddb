"""The memory one image needs on its way through the pipeline, estimated from its header before decoding.

The figures are the peak resident memory that `bench/memory_peak.py` measured above a warmed-up process
(model loaded), per pixel of the source, rounded up; see bench/RESULTS.md, "memory_peak".
"""

from __future__ import annotations

from dataclasses import dataclass

from cutout_fleet.errors import ImageTooLarge

MIB = 1 << 20
# The peak of decode -> model -> mask -> background -> PNG: the decoded RGB (Pillow keeps 4 bytes per
# pixel), the RGBA cutout (4) and the uint8 alpha (1), plus strips and the allocator's slack.  Measured
# 9.3 for grey (8- and 16-bit), RGB and JPEG sources; up to 10.5 with a mask blur and offset.
PIPELINE_BYTES_PER_PIXEL = 11
# A source with transparency keeps its own alpha beside the RGB until the mask is refined: measured 10.2
# for RGBA without mask options, 11.1 with them.
SOURCE_ALPHA_BYTES_PER_PIXEL = 1
# WebP: libwebp's lossy encoder, then the output decoded again to check that no colour is left under
# alpha 0 (Pillow's WebP decoder holds four full-size RGBA buffers), beside the RGBA cutout; when the
# check fails, quality 100 and then lossless are tried.  Measured 25.2 in all (random pixels: 36.7).
LOSSY_WEBP_EXTRA_BYTES_PER_PIXEL = 28
# Framing (`--crop`, `--canvas`), measured by bench/memory_peak.py on a 6000x6000 RGB PNG (bench/RESULTS.md,
# "catalog outputs"): per source pixel, a crop added 2.9 (a crop of about half the photo, copied unscaled)
# and a 2000x2000 or 1200x1200 canvas 4.1-5.1 (Pillow resamples RGBA through a premultiplied copy of the
# part it scales); per canvas pixel, the framed RGBA, its RGB and alpha and the composite, counted.
FRAMING_BYTES_PER_SOURCE_PIXEL = 5
CANVAS_BYTES_PER_PIXEL = 8


@dataclass(frozen=True)
class MemoryBudget:
    """At most `max_bytes` for one image written as `output_format` ("png" or "webp")."""

    max_bytes: int
    output_format: str = "png"
    # With framing: the canvas's pixels (a fixed canvas, or a square's cap), or None for a crop without a
    # canvas.  0: the job does not frame.
    framed_px: int | None = 0

    def bytes_per_pixel(self, *, has_alpha: bool) -> int:
        extra_alpha = SOURCE_ALPHA_BYTES_PER_PIXEL if has_alpha else 0
        extra_webp = LOSSY_WEBP_EXTRA_BYTES_PER_PIXEL if self.output_format == "webp" else 0
        return PIPELINE_BYTES_PER_PIXEL + extra_alpha + extra_webp

    def estimate_bytes(self, width: int, height: int, *, has_alpha: bool) -> int:
        """The peak memory this image would need, above the process's own (model included)."""
        source = width * height * self.bytes_per_pixel(has_alpha=has_alpha)
        if self.framed_px == 0:
            return source
        canvas = (self.framed_px or 0) * CANVAS_BYTES_PER_PIXEL
        return source + width * height * FRAMING_BYTES_PER_SOURCE_PIXEL + canvas

    def check(self, width: int, height: int, *, has_alpha: bool, name: str) -> None:
        """Raise ImageTooLarge, naming `name`, when the estimate is over the budget."""
        needed = self.estimate_bytes(width, height, has_alpha=has_alpha)
        if needed <= self.max_bytes:
            return
        per_pixel = self.bytes_per_pixel(has_alpha=has_alpha)
        framed = " and its framed output" if self.framed_px != 0 else ""
        raise ImageTooLarge(
            f"{name}: a {width}x{height} image{framed} written as {self.output_format.upper()} needs about "
            f"{needed / MIB:,.0f} MiB ({per_pixel} bytes per source pixel), over the budget of "
            f"{self.max_bytes / MIB:,.0f} MiB per image (CUTOUT_LIMITS__MAX_IMAGE_MEMORY_MIB); raise it, "
            "and the worker's memory limit with it, to accept this image"
        )
