"""Encode the cutout as PNG or WebP with no metadata carried over from the source."""

from __future__ import annotations

import io
from typing import Literal

from PIL import Image

CONTENT_TYPES = {"png": "image/png", "webp": "image/webp"}


def encode_image(
    image: Image.Image,
    fmt: Literal["png", "webp"],
    *,
    webp_quality: int = 90,
    png_compress_level: int = 6,
) -> bytes:
    """PNG (lossless) or WebP bytes.  EXIF, XMP, ICC and text chunks are never written."""
    clean = image.copy()
    clean.info = {}  # Pillow's PNG writer falls back to image.info for the ICC profile
    buffer = io.BytesIO()
    if fmt == "png":
        clean.save(buffer, "PNG", compress_level=png_compress_level)
    elif fmt == "webp":
        clean.save(buffer, "WEBP", quality=webp_quality, method=4)
    else:
        raise ValueError(f"unsupported output format {fmt!r}")
    return buffer.getvalue()
