"""Catalog framing: crop to the product, keep a margin, place it on a canvas at a chosen fill.

`plan_frame` does the geometry on numbers only; `apply_frame` and `frame_mask` carry a plan out on the
image and on its mask alike, so both outputs line up pixel for pixel.  Without a crop the caller passes
`whole_image(size)` as the box: the whole photo is then what gets margins, fill and canvas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cutout_fleet.layout import (
    ALIGNMENTS,
    MAX_CANVAS_SIDE_PX,
    MAX_MARGIN_PERCENT,
    MAX_SQUARE_PX,
    MAX_UPSCALE,
    NO_MARGIN,
    SQUARE,
    Align,
    Canvas,
    Margin,
    parse_canvas,
    parse_margin,
)
from cutout_fleet.worker.imaging.subject_box import Box

# The option vocabulary lives in the core (cutout_fleet.layout); re-exported for the imaging callers.
__all__ = [
    "ALIGNMENTS",
    "MAX_CANVAS_SIDE_PX",
    "MAX_MARGIN_PERCENT",
    "MAX_SQUARE_PX",
    "MAX_UPSCALE",
    "NO_MARGIN",
    "SQUARE",
    "Align",
    "Canvas",
    "FramePlan",
    "Margin",
    "apply_frame",
    "crop_box_with_margin",
    "frame_mask",
    "parse_canvas",
    "parse_margin",
    "plan_frame",
    "whole_image",
]

RGB = tuple[int, int, int]
FloatBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class FramePlan:
    """Output pixel (u, v) shows source point (crop_box[0] + (u - paste_offset[0]) / scale, ...)."""

    crop_box: FloatBox  # source pixels; may reach outside the image, which then shows background
    scale: float  # output pixels per source pixel
    canvas_size: tuple[int, int]
    paste_offset: tuple[int, int]  # where the scaled crop's top-left lands on the canvas
    scaled_size: tuple[int, int]  # the scaled crop, in whole output pixels
    product_box: FloatBox  # where the product box lands on the canvas
    fill_reached: float  # the product's span over the canvas along its limiting side
    upscaled: bool


def whole_image(image_size: tuple[int, int]) -> Box:
    """The box to frame when not cropping to the product."""
    return 0, 0, image_size[0], image_size[1]


def crop_box_with_margin(box: Box, margin_px: int) -> Box:
    """`box` grown by `margin_px` on every side.  Not clamped to the image: a product at the photo's
    edge keeps its margin, and the part outside the photo is filled with the background."""
    x0, y0, x1, y1 = box
    return x0 - margin_px, y0 - margin_px, x1 + margin_px, y1 + margin_px


def plan_frame(
    box: Box,
    *,
    margin: Margin = NO_MARGIN,
    canvas: Canvas | None = None,
    fill: float | None = None,
    align: Align = "center",
    max_upscale: float = MAX_UPSCALE,
    max_square_px: int = MAX_SQUARE_PX,
) -> FramePlan:
    """The geometry for framing the product `box` (source pixels).

    Without a canvas the output is the box plus its margin, unscaled.  With one, the box plus margin is
    scaled to fit it (contain), or with `fill` the product box spans that share of the canvas along its
    limiting side, the margin then only a minimum border; either way never scaled up past `max_upscale`.
    """
    x0, y0, x1, y1 = box
    box_w, box_h = x1 - x0, y1 - y0
    if box_w <= 0 or box_h <= 0:
        raise ValueError(f"box {box}: empty, nothing to frame")
    if align not in ALIGNMENTS:
        raise ValueError(f"align {align!r}: expected one of {', '.join(ALIGNMENTS)}")
    if fill is not None and not 0 < fill <= 1:
        raise ValueError(f"fill {fill}: expected a share of the canvas above 0 and at most 1, such as 0.85")
    if fill is not None and canvas is None:
        raise ValueError("fill needs a canvas: give one such as '1200x1200' or 'square'")
    if max_upscale < 1:
        raise ValueError(f"max_upscale {max_upscale}: must be at least 1 (1 never scales up)")

    canvas_w, canvas_h, margin_px = _canvas_and_margin(box_w, box_h, margin, canvas, max_square_px)
    fit = min((canvas_w - 2 * margin_px) / box_w, (canvas_h - 2 * margin_px) / box_h)
    if fit <= 0:
        raise ValueError(f"margin {margin_px:g}px leaves no room on a {canvas_w}x{canvas_h} canvas")
    wanted = fit if fill is None else min(fill * canvas_w / box_w, fill * canvas_h / box_h)
    scale = min(wanted, fit, max_upscale)

    product_w, product_h = box_w * scale, box_h * scale
    # The product's top-left snaps to whole pixels, so a whole-pixel product has crisp edges; bottom
    # alignment keeps the bottom edge exact instead, as that is where the product stands.
    left = _round_half_up((canvas_w - product_w) / 2)
    top = (
        canvas_h - margin_px - product_h if align == "bottom" else _round_half_up((canvas_h - product_h) / 2)
    )

    paste_x0, paste_x1 = _span_px(left - margin_px, left + product_w + margin_px, canvas_w)
    paste_y0, paste_y1 = _span_px(top - margin_px, top + product_h + margin_px, canvas_h)
    crop_box = (
        x0 + (paste_x0 - left) / scale,
        y0 + (paste_y0 - top) / scale,
        x0 + (paste_x1 - left) / scale,
        y0 + (paste_y1 - top) / scale,
    )
    return FramePlan(
        crop_box=crop_box,
        scale=scale,
        canvas_size=(canvas_w, canvas_h),
        paste_offset=(paste_x0, paste_y0),
        scaled_size=(paste_x1 - paste_x0, paste_y1 - paste_y0),
        product_box=(float(left), float(top), left + product_w, top + product_h),
        fill_reached=max(product_w / canvas_w, product_h / canvas_h),
        upscaled=scale > 1,
    )


def _canvas_and_margin(
    box_w: int, box_h: int, margin: Margin, canvas: Canvas | None, max_square_px: int
) -> tuple[int, int, float]:
    """Canvas width, height and the margin in output pixels.

    Without a fixed canvas (none, or a square sized from the crop) a percentage is of the box's longer
    side, rounded to whole pixels: the crop comes first.  A square capped at `max_square_px` keeps the
    look of the uncapped one, so a percentage margin shrinks with it; pixels stay output pixels.
    """
    if canvas is not None and canvas.size is not None:
        canvas_w, canvas_h = canvas.size
        return canvas_w, canvas_h, _margin_px(margin, min(canvas_w, canvas_h))
    longer = max(box_w, box_h)
    margin_px = _margin_px(margin, longer)
    if canvas is None:
        return box_w + 2 * margin_px, box_h + 2 * margin_px, margin_px
    side = longer + 2 * margin_px
    if side <= max_square_px:
        return side, side, margin_px
    capped_margin_px = margin_px * max_square_px / side if margin.unit == "percent" else margin_px
    return max_square_px, max_square_px, capped_margin_px


def _margin_px(margin: Margin, reference_px: int) -> int:
    """The margin in whole pixels, a percentage taken of `reference_px`."""
    if margin.unit == "percent":
        return _round_half_up(margin.value * reference_px / 100)
    return int(margin.value)


def apply_frame(image: Image.Image, plan: FramePlan, background: RGB | None) -> Image.Image:
    """`image` (RGB or RGBA) framed by `plan`: on `background`, or on a transparent RGBA canvas when None."""
    if background is None:
        return _framed(image, plan, Image.new("RGBA", plan.canvas_size, (0, 0, 0, 0)))
    return _framed(image, plan, Image.new("RGB", plan.canvas_size, background))


def frame_mask(mask: np.ndarray, plan: FramePlan) -> np.ndarray:
    """A uint8 mask framed exactly like its image, 0 wherever the canvas shows no source pixel."""
    framed = _framed(
        Image.fromarray(mask.astype(np.uint8, copy=False)), plan, Image.new("L", plan.canvas_size, 0)
    )
    return np.asarray(framed, dtype=np.uint8)


def _framed(image: Image.Image, plan: FramePlan, canvas: Image.Image) -> Image.Image:
    """Paste onto `canvas` (modified, returned) the part of the plan's crop that lies inside `image`.

    Only that part is converted to the canvas's mode, never the whole photo; an RGBA part on an RGB
    canvas is composited through its alpha, which Pillow resized premultiplied (no dark fringes).
    """
    width, height = image.size
    span_x = _visible_span(plan.crop_box[0], plan.crop_box[2], width, plan.paste_offset[0], plan.scale)
    span_y = _visible_span(plan.crop_box[1], plan.crop_box[3], height, plan.paste_offset[1], plan.scale)
    if span_x is None or span_y is None:
        return canvas
    (u0, u1, sx0, sx1), (v0, v1, sy0, sy1) = span_x, span_y
    size = (u1 - u0, v1 - v0)
    source = (sx0, sy0, sx1, sy1)
    if size == (sx1 - sx0, sy1 - sy0) and all(c.is_integer() for c in source):
        part = image.crop((int(sx0), int(sy0), int(sx1), int(sy1)))  # unscaled: an exact copy
    else:
        part = image.resize(size, Image.Resampling.LANCZOS, box=source)
    if part.mode == "RGBA" and canvas.mode == "RGB":
        canvas.paste(part.convert("RGB"), (u0, v0), mask=part.getchannel("A"))
    else:
        canvas.paste(part if part.mode == canvas.mode else part.convert(canvas.mode), (u0, v0))
    return canvas


def _visible_span(
    crop_0: float, crop_1: float, length: int, offset: int, scale: float
) -> tuple[int, int, float, float] | None:
    """Along one axis, the output pixels [u0, u1) showing the image's [0, length), and their source span."""
    u0 = offset + _round_half_up((max(crop_0, 0) - crop_0) * scale)
    u1 = offset + _round_half_up((min(crop_1, length) - crop_0) * scale)
    if u1 <= u0:
        return None
    source_0 = min(max(crop_0 + (u0 - offset) / scale, 0.0), float(length))
    source_1 = min(max(crop_0 + (u1 - offset) / scale, 0.0), float(length))
    return u0, u1, source_0, source_1


def _span_px(start: float, end: float, length: int) -> tuple[int, int]:
    """[start, end) rounded to whole output pixels and kept on the canvas."""
    return max(_round_half_up(start), 0), min(_round_half_up(end), length)


def _round_half_up(value: float) -> int:
    """Round 287.5 to 288 (Python's round would give 288 here but 286 for 286.5)."""
    return math.floor(value + 0.5)
