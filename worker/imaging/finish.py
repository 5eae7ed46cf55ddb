"""Everything after the mask, in one place: the product's box, framing, shadow and background.

`make_cutout` hands over the decoded RGB and the refined full-size alpha; `finish` returns the image to
encode and the mask to write, both at the output's geometry.  Each step is a pure function of its own
module; a new step (a colour correction, say) is added here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from cutout_fleet.errors import NoSubject
from cutout_fleet.layout import (
    DEFAULT_SPECK_SHARE,
    MAX_SQUARE_PX,
    MAX_UPSCALE,
    MIN_SUBJECT_SHARE,
    NO_MARGIN,
    VISIBLE_THRESHOLD,
    Align,
    Canvas,
    Margin,
)
from cutout_fleet.worker.imaging.composite import RGB, apply_background, rgba_without_hidden_colour
from cutout_fleet.worker.imaging.framing import apply_frame, frame_mask, plan_frame, whole_image
from cutout_fleet.worker.imaging.shadow import drop_shadow, place_with_shadow
from cutout_fleet.worker.imaging.subject_box import Box, is_no_subject, speck_area_px, subject_box


@dataclass(frozen=True)
class FinishSpec:
    """What the output looks like (built from the job's options by the pipeline)."""

    background: RGB | None = None
    cutout: bool = True  # write the cutout
    mask: bool = False  # write the mask
    crop_subject: bool = False
    margin: Margin = NO_MARGIN
    canvas: Canvas | None = None
    fill: float | None = None
    align: Align = "center"
    shadow: bool = False
    keep_no_subject: bool = False  # False: a mask with no product fails the item (NoSubject)
    visible_threshold: int = VISIBLE_THRESHOLD
    min_speck_share: float = DEFAULT_SPECK_SHARE
    min_subject_share: float = MIN_SUBJECT_SHARE
    max_upscale: float = MAX_UPSCALE
    max_square_px: int = MAX_SQUARE_PX

    @property
    def frames(self) -> bool:
        return self.crop_subject or self.canvas is not None or self.margin != NO_MARGIN


@dataclass(frozen=True)
class Framing:
    """What framing did, for the item's metadata and report line."""

    box: Box  # the framed box in source pixels: the product's, or the whole photo
    scale: float  # output pixels per source pixel
    fill_reached: float | None  # the product's span of the canvas along its limiting side; None: no canvas
    upscaled: bool
    no_subject: bool  # the mask showed no product, and the job keeps such items uncropped


@dataclass
class Finished:
    image: Image.Image | None  # None when only the mask is written
    mask: np.ndarray | None  # uint8, the image's geometry; None when not asked for
    framing: Framing | None  # None when the job does not frame


def finish(rgb: Image.Image, alpha: np.ndarray, spec: FinishSpec, *, name: str = "image") -> Finished:
    """The output of one image from its RGB and full-size alpha.  Raises NoSubject (naming `name`)
    when cropping to a product the mask does not show, unless the spec keeps such images."""
    framing = None
    if spec.frames:
        box, no_subject = _framed_box(alpha, spec, name)
        plan = plan_frame(
            box,
            margin=spec.margin,
            canvas=spec.canvas,
            fill=spec.fill,
            align=spec.align,
            max_upscale=spec.max_upscale,
            max_square_px=spec.max_square_px,
        )
        fill = round(plan.fill_reached, 4) if spec.canvas is not None else None
        framing = Framing(box, plan.scale, fill, plan.upscaled, no_subject)
        if spec.cutout:
            # Framed as one transparent RGBA, so colour and alpha are resampled together (premultiplied).
            framed = apply_frame(Image.fromarray(rgba_without_hidden_colour(rgb, alpha)), plan, None)
            alpha = np.asarray(framed.getchannel("A"))
            rgb = framed.convert("RGB")
            del framed  # the framed RGBA is rebuilt on the background: keep one copy at a time
        else:
            alpha = frame_mask(alpha, plan)
    image = _placed(rgb, alpha, spec) if spec.cutout else None
    return Finished(image, alpha if spec.mask else None, framing)


def _framed_box(alpha: np.ndarray, spec: FinishSpec, name: str) -> tuple[Box, bool]:
    """The box to frame, and whether the product was missing (the whole photo framed instead)."""
    height, width = alpha.shape
    if not spec.crop_subject:
        return whole_image((width, height)), False
    box = subject_box(
        alpha,
        visible_threshold=spec.visible_threshold,
        min_speck_px=speck_area_px((width, height), spec.min_speck_share),
    )
    if box is not None and not is_no_subject(box, (width, height), spec.min_subject_share):
        return box, False
    if not spec.keep_no_subject:
        share = 0.0 if box is None else (box[2] - box[0]) * (box[3] - box[1]) / (width * height)
        raise NoSubject(
            f"{name}: no product found in the mask (its visible part covers {share:.2%} of the image, "
            f"under {spec.min_subject_share:.2%}); check the photo, or pass --on-no-subject keep to write "
            "it uncropped"
        )
    return whole_image((width, height)), True


def _placed(rgb: Image.Image, alpha: np.ndarray, spec: FinishSpec) -> Image.Image:
    if spec.shadow:
        return place_with_shadow(rgb, alpha, drop_shadow(alpha), spec.background)
    return apply_background(rgb, alpha, spec.background)
