"""A soft drop shadow under the product, and the product placed on its background above it.

The shadow is the product's own silhouette, moved down and a little right, blurred and made faint:
sizes are shares of the product's longer side, so the look is the same at every output size.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from cutout_fleet.worker.imaging.composite import ALPHA, RGB, apply_background, drop_hidden_colour
from cutout_fleet.worker.imaging.strips import strip_rows

SHADOW_OPACITY = 0.4  # at the silhouette's core; a shadow as dark as the product reads as a second product
SHADOW_BLUR_SHARE = 0.025  # Gaussian radius, of the product's longer side
SHADOW_OFFSET_SHARE = (0.01, 0.02)  # (right, down), of the product's longer side
MIN_SHADOW_BLUR_PX = 1.0


def drop_shadow(alpha: np.ndarray) -> np.ndarray:
    """The shadow's own alpha (uint8, the size of `alpha`): the silhouette shifted, blurred and faded.
    All zeros when `alpha` shows nothing."""
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if len(rows) == 0:
        return np.zeros_like(alpha, dtype=np.uint8)
    longer = int(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))
    dx, dy = (round(share * longer) for share in SHADOW_OFFSET_SHARE)
    shifted = np.zeros_like(alpha, dtype=np.uint8)
    height, width = alpha.shape
    shifted[dy:, dx:] = alpha[: height - dy, : width - dx]
    radius = max(MIN_SHADOW_BLUR_PX, SHADOW_BLUR_SHARE * longer)
    blurred = Image.fromarray(shifted).filter(ImageFilter.GaussianBlur(radius))
    # Pillow's point() scales through a lookup table: no full-size float copy.
    faded = blurred.point(lambda value: round(value * SHADOW_OPACITY))
    return np.asarray(faded, dtype=np.uint8)


def place_with_shadow(
    rgb: Image.Image, alpha: np.ndarray, shadow: np.ndarray, background: RGB | None
) -> Image.Image:
    """The product (`rgb` through `alpha`) over its black `shadow`, on `background`; with None, the
    shadow stays in the alpha channel as a semi-transparent dark area (RGBA)."""
    if background is not None:
        under = apply_background(Image.new("RGB", rgb.size, (0, 0, 0)), shadow, background)
        under.paste(rgb if rgb.mode == "RGB" else rgb.convert("RGB"), mask=Image.fromarray(alpha))
        return under
    width, height = rgb.size
    rgba = np.empty((height, width, 4), dtype=np.uint8)
    for top, bottom in strip_rows(width, height):
        # "Over" with a black shadow: alpha = a + s (1 - a); colour = product colour * a / alpha.
        product = alpha[top:bottom].astype(np.float32) / 255
        shade = shadow[top:bottom].astype(np.float32) / 255
        out_alpha = product + shade * (1 - product)
        weight = np.divide(product, out_alpha, out=np.zeros_like(product), where=out_alpha > 0)
        colours = np.asarray(rgb.crop((0, top, width, bottom)).convert("RGB"), dtype=np.float32)
        strip = rgba[top:bottom]
        strip[..., :ALPHA] = np.rint(colours * weight[..., None]).astype(np.uint8)
        strip[..., ALPHA] = np.rint(out_alpha * 255).astype(np.uint8)
        drop_hidden_colour(strip)
    return Image.fromarray(rgba)
