"""Put the cutout on its background: transparent (RGBA) or flattened onto a solid colour (RGB)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cutout_fleet.worker.imaging.strips import strip_rows

RGB = tuple[int, int, int]
ALPHA = 3


def apply_background(rgb: Image.Image, alpha: np.ndarray, background: RGB | None) -> Image.Image:
    """`background` None keeps transparency (no colour left where alpha is 0); a colour flattens onto it."""
    colours = rgb if rgb.mode == "RGB" else rgb.convert("RGB")
    if background is None:
        return Image.fromarray(rgba_without_hidden_colour(colours, alpha))
    canvas = Image.new("RGB", rgb.size, background)
    canvas.paste(colours, mask=Image.fromarray(alpha.astype(np.uint8, copy=False)))
    return canvas


def rgba_without_hidden_colour(rgb: Image.Image, alpha: np.ndarray) -> np.ndarray:
    """An (h, w, 4) uint8 array of `rgb` with `alpha`, hidden colour dropped; built a strip at a time,
    so the RGBA array is the only full-size copy."""
    width, height = rgb.size
    rgba = np.empty((height, width, 4), dtype=np.uint8)
    for top, bottom in strip_rows(width, height):
        strip = rgba[top:bottom]
        strip[..., :ALPHA] = np.asarray(rgb.crop((0, top, width, bottom)))
        strip[..., ALPHA] = alpha[top:bottom]
        drop_hidden_colour(strip)
    return rgba


def drop_hidden_colour(rgba: np.ndarray) -> np.ndarray:
    """Zero, in place, the RGB of every fully transparent pixel of an (h, w, 4) uint8 array; returns it.

    A viewer hides those pixels, but anyone who drops the alpha channel would get the removed background
    back (a room, a person, a licence plate).  Partial alpha keeps its colour: edges need it.
    """
    rgba[rgba[..., ALPHA] == 0, :ALPHA] = 0
    return rgba
