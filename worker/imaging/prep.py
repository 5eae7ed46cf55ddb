"""Model input and output: smart resize, normalisation to the model's contract, raw output -> mask."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from PIL import Image

from cutout_fleet.worker.imaging.strips import strip_rows

Scale = Literal["max", "255"]
Activation = Literal["none", "sigmoid"]

# With reducing_gap Pillow first shrinks by an integer factor with a box filter, then finishes
# with LANCZOS: near-identical masks, much cheaper on 6000 px photos.
REDUCING_GAP = 3.0
_EPS = 1e-6
_FLOAT32 = np.dtype(np.float32)


def smart_resize(image: Image.Image, size_wh: tuple[int, int]) -> Image.Image:
    """Resize to exactly `size_wh` (models are trained on stretched squares), fast for big photos."""
    if image.size == size_wh:
        return image
    return image.resize(size_wh, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)


def to_model_input(
    image: Image.Image,
    size_wh: tuple[int, int],
    *,
    scale: Scale,
    mean: tuple[float, float, float] | None,
    std: tuple[float, float, float] | None,
    dtype: np.dtype = _FLOAT32,
) -> np.ndarray:
    """An RGB image -> a [1, 3, H, W] tensor as the model's contract wants it."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")  # no full-size copy when it is RGB
    pixels: np.ndarray = np.asarray(smart_resize(rgb, size_wh), dtype=np.float32)
    # rembg divides by the image's own maximum, not 255; the spec says which this model expects.
    divisor = max(float(pixels.max()), _EPS) if scale == "max" else 255.0
    pixels = pixels / divisor
    if mean is not None and std is not None:
        pixels = (pixels - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[np.newaxis], dtype=dtype)


def output_to_mask(raw: np.ndarray, activation: Activation) -> np.ndarray:
    """A raw [1, 1, H, W] (or [H, W]) output -> a float32 HxW mask in 0..1, min-max stretched."""
    pred: np.ndarray = np.asarray(raw, dtype=np.float32)
    pred = pred.reshape(pred.shape[-2:])
    if activation == "sigmoid":
        pred = 1.0 / (1.0 + np.exp(-np.clip(pred, -80.0, 80.0)))
    low, high = float(pred.min()), float(pred.max())
    if high - low < _EPS:
        # A flat prediction carries no shape; stretching it would amplify noise into a mask.
        flat: np.ndarray = np.clip(pred, 0.0, 1.0).astype(np.float32)
        return flat
    stretched: np.ndarray = ((pred - low) / (high - low)).astype(np.float32)
    return stretched


def mask_to_size(mask: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Resize a float mask to the original image size (LANCZOS, as rembg does), clipped to 0..1."""
    width, height = size_wh
    resized = np.empty((height, width), dtype=np.float32)
    for top, bottom, strip in mask_strips_at_size(mask, size_wh):
        resized[top:bottom] = strip
    return resized


def mask_strips_at_size(mask: np.ndarray, size_wh: tuple[int, int]) -> Iterator[tuple[int, int, np.ndarray]]:
    """`mask_to_size`, as (top, bottom, float32 rows) strips: only the resized image is full-size."""
    width, height = size_wh
    if (mask.shape[1], mask.shape[0]) == size_wh:
        for top, bottom in strip_rows(width, height):
            yield top, bottom, np.clip(mask[top:bottom], 0.0, 1.0).astype(np.float32, copy=False)
        return
    resized = Image.fromarray(mask.astype(np.float32)).resize(size_wh, Image.Resampling.LANCZOS)
    try:
        for top, bottom in strip_rows(width, height):
            strip = np.asarray(resized.crop((0, top, width, bottom)), dtype=np.float32)
            yield top, bottom, np.clip(strip, 0.0, 1.0)
    finally:
        resized.close()
