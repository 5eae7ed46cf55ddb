"""Put the cutout on its background: transparent (RGBA) or flattened onto a solid colour (RGB)."""

from __future__ import annotations

import numpy as np
from PIL import Image

RGB = tuple[int, int, int]


def apply_background(rgb: Image.Image, alpha: np.ndarray, background: RGB | None) -> Image.Image:
    """`background` None keeps transparency; a colour flattens the subject onto it."""
    mask = Image.fromarray(alpha, mode="L")
    if background is None:
        out = rgb.convert("RGBA")
        out.putalpha(mask)
        return out
    canvas = Image.new("RGB", rgb.size, background)
    canvas.paste(rgb.convert("RGB"), mask=mask)
    return canvas
