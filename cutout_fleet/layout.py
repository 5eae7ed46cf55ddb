"""The catalog layout options as text and as values: margins (`5%`, `40px`) and canvases (`WxH`, `square`).

Shared by the options (validation, one canonical spelling for the hash) and the imaging core (the
geometry in worker/imaging/framing.py), so a value means the same in both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Align = Literal["center", "bottom"]
ALIGNMENTS: tuple[Align, ...] = ("center", "bottom")

# Defaults of the options that tune the product box and the canvas (ImageOptions; settings may change them).
VISIBLE_THRESHOLD = 128  # alpha at or above this counts as product; fainter haze does not
DEFAULT_SPECK_SHARE = 0.0005  # components under 0.05% of the image area are dust, not product
MIN_SUBJECT_SHARE = 0.005  # a box under 0.5% of the image is no product at all
MAX_UPSCALE = 4.0  # beyond this a small product turns to mush: better small than blurry
MAX_SQUARE_PX = 2000

MAX_CANVAS_SIDE_PX = 10_000  # a typo such as 12000x12000 would be a 576 MB canvas
MAX_MARGIN_PERCENT = 50.0  # two margins of half the side would leave the product no room

_MARGIN = re.compile(r"^\s*(?:(?P<percent>\d+(?:\.\d+)?)\s*%|(?P<px>\d+)\s*px|(?P<zero>0+))\s*$")
_CANVAS = re.compile(r"^\s*(?P<width>\d+)\s*[xX]\s*(?P<height>\d+)\s*$")


@dataclass(frozen=True)
class Margin:
    """`percent` of the canvas's shorter side (of the product box's longer side without a fixed
    canvas), or `px` output pixels."""

    value: float
    unit: Literal["percent", "px"]

    def __str__(self) -> str:
        if self.value == 0:
            return "0"
        return f"{self.value:g}%" if self.unit == "percent" else f"{int(self.value)}px"


NO_MARGIN = Margin(0, "px")


@dataclass(frozen=True)
class Canvas:
    """A fixed output size, or `size` None for a square sized from the crop."""

    size: tuple[int, int] | None

    def __str__(self) -> str:
        return "square" if self.size is None else f"{self.size[0]}x{self.size[1]}"


SQUARE = Canvas(None)


def parse_margin(text: str) -> Margin:
    """'5%', '40px' or '0'."""
    match = _MARGIN.match(text)
    if match is None:
        raise ValueError(
            f"margin {text!r}: expected a percentage such as '5%', pixels such as '40px', or '0'"
        )
    if match["percent"] is not None:
        percent = float(match["percent"])
        if percent >= MAX_MARGIN_PERCENT:
            raise ValueError(f"margin {text!r}: a percentage must be under {MAX_MARGIN_PERCENT:g}%")
        return Margin(percent, "percent") if percent else NO_MARGIN
    return Margin(int(match["px"] or 0), "px")


def parse_canvas(text: str) -> Canvas:
    """'1200x1200' (width x height) or 'square'."""
    if text.strip().lower() == "square":
        return SQUARE
    match = _CANVAS.match(text)
    if match is None:
        raise ValueError(f"canvas {text!r}: expected WIDTHxHEIGHT such as '1200x1200', or 'square'")
    width, height = int(match["width"]), int(match["height"])
    if not (0 < width <= MAX_CANVAS_SIDE_PX and 0 < height <= MAX_CANVAS_SIDE_PX):
        raise ValueError(f"canvas {text!r}: each side must be 1 to {MAX_CANVAS_SIDE_PX} pixels")
    return Canvas((width, height))
