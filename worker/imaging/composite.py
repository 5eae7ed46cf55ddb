"""Put the cutout on its background: transparent (RGBA) or flattened onto a solid colour (RGB)."""

from __future__ import annotations

import numpy as np
from PIL import Image

RGB = tuple[int, int, int]
ALPHA = 3


def apply_background(rgb: Image.Image, alpha: np.ndarray, background: RGB | None) -> Image.Image:
    """`background` None keeps transparency (no colour left where alpha is 0); a colour flattens onto it."""
    if background is None:
        pixels = np.dstack([np.asarray(rgb.convert("RGB")), alpha.astype(np.uint8, copy=False)])
        return Image.fromarray(drop_hidden_colour(pixels))
    canvas = Image.new("RGB", rgb.size, background)
    canvas.paste(rgb.convert("RGB"), mask=Image.fromarray(alpha, mode="L"))
    return canvas


def drop_hidden_colour(rgba: np.ndarray) -> np.ndarray:
    """Zero, in place, the RGB of every fully transparent pixel of an (h, w, 4) uint8 array; returns it.

    A viewer hides those pixels, but anyone who drops the alpha channel would get the removed background
    back (a room, a person, a licence plate).  Partial alpha keeps its colour: edges need it.
    """
    rgba[rgba[..., ALPHA] == 0, :ALPHA] = 0
    return rgba
