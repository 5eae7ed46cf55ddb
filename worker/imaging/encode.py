"""Encode the cutout as PNG, WebP or JPEG with no metadata carried over from the source, and no colour
left where the cutout is fully transparent; and the mask as an 8-bit grayscale PNG."""

from __future__ import annotations

import io
from typing import Any, Literal

import numpy as np
from PIL import Image

from cutout_fleet.worker.imaging.composite import ALPHA, rgba_without_hidden_colour
from cutout_fleet.worker.imaging.mask import offset_mask
from cutout_fleet.worker.imaging.strips import strip_rows

CONTENT_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
# zlib's strategy for PNG, as Pillow's writer takes it (`compress_type`).  RLE: on real cutouts (large
# runs of transparent pixels, smooth products) it took 0.57x the time of the default strategy for 1.03x
# the bytes (bench/RESULTS.md, "encoding").
PNG_STRATEGIES = {"default": -1, "filtered": 1, "rle": 3}
PngStrategy = Literal["default", "filtered", "rle"]
WEBP_METHOD = 4
# Lossy WebP codes 16x16 macroblocks, so colour from the subject (and codec noise near black) lands in
# transparent pixels of the same and the next block.  Beyond this reach, in x and in y, a lossy output must
# decode to (0, 0, 0, 0) where alpha is 0.
LOSSY_SMEAR_REACH_PX = 16
# When the requested quality leaves colour beyond that reach, quality 100 is tried, then lossless.
WEBP_FALLBACK_QUALITY = 100


def encode_image(
    image: Image.Image,
    fmt: Literal["png", "webp", "jpeg"],
    *,
    webp_quality: int = 90,
    webp_lossless: bool = False,
    png_compress_level: int = 6,
    png_strategy: PngStrategy = "rle",
    jpeg_quality: int = 90,
) -> bytes:
    """PNG (lossless), WebP or JPEG bytes.  EXIF, XMP, ICC and text chunks are never written.

    JPEG has no alpha: it takes an image already flattened onto a background (RGB); the options refuse
    `--format jpeg` with `--background none` before any work.

    Fully transparent pixels are written as (0, 0, 0, 0): exactly in PNG and lossless WebP; in lossy WebP
    wherever no pixel with alpha above 0 lies within LOSSY_SMEAR_REACH_PX (checked on the encoded bytes).
    """
    clean = _without_metadata_or_hidden_colour(image)
    if fmt == "png":
        return _png(clean, png_compress_level, png_strategy)
    if fmt == "webp":
        if webp_lossless:
            return _lossless_webp(clean)
        return _lossy_webp(clean, webp_quality)
    if fmt == "jpeg":
        if clean.mode != "RGB":
            raise ValueError(f"JPEG needs an image flattened onto a background, not mode {clean.mode}")
        # optimize: Huffman tables fitted to the image, a few % smaller for a few ms.
        return _save(clean, "JPEG", quality=jpeg_quality, optimize=True)
    raise ValueError(f"unsupported output format {fmt!r}")


def encode_mask(mask: np.ndarray, *, png_compress_level: int = 6, png_strategy: PngStrategy = "rle") -> bytes:
    """The mask as an 8-bit grayscale PNG (0: background, 255: product), with no metadata."""
    image = Image.fromarray(mask.astype(np.uint8, copy=False))  # 2-D uint8: mode L
    return _png(image, png_compress_level, png_strategy)


def _png(image: Image.Image, level: int, strategy: PngStrategy) -> bytes:
    return _save(image, "PNG", compress_level=level, compress_type=PNG_STRATEGIES[strategy])


def _without_metadata_or_hidden_colour(image: Image.Image) -> Image.Image:
    """The pixels to write, with an empty .info (Pillow's PNG writer falls back to it for the ICC profile).

    The caller's image is never changed, and it is copied only when it holds colour under alpha 0:
    cutouts from `apply_background` never do, and a 64 Mpx RGBA copy is 256 MB.
    """
    image.load()
    if image.mode == "RGBA" and _has_hidden_colour(image):
        rgb, alpha = image.convert("RGB"), np.asarray(image.getchannel("A"))
        clean = Image.fromarray(rgba_without_hidden_colour(rgb, alpha))
    else:
        clean = image._new(image.im)  # the same pixels (not copied) with info of its own
    clean.info = {}
    return clean


def _has_hidden_colour(rgba: Image.Image) -> bool:
    width, height = rgba.size
    for top, bottom in strip_rows(width, height):
        strip = np.asarray(rgba.crop((0, top, width, bottom)))
        if strip[strip[..., ALPHA] == 0, :ALPHA].any():
            return True
    return False


def _lossy_webp(image: Image.Image, quality: int) -> bytes:
    """The requested quality when its output keeps transparent areas clean, else the first that does."""
    if image.mode != "RGBA":
        return _save(image, "WEBP", quality=quality, method=WEBP_METHOD, exact=True)
    for attempt in dict.fromkeys([quality, WEBP_FALLBACK_QUALITY]):
        # exact=True: otherwise libwebp rewrites the RGB under alpha 0 to whatever compresses best.
        data = _save(image, "WEBP", quality=attempt, method=WEBP_METHOD, exact=True)
        if _decoded_hidden_colour_beyond(data, LOSSY_SMEAR_REACH_PX) == 0:
            return data
    return _lossless_webp(image)


def _lossless_webp(image: Image.Image) -> bytes:
    # exact=True: without it libwebp's lossless mode also rewrites the RGB of pixels whose alpha is 0.
    return _save(image, "WEBP", lossless=True, method=WEBP_METHOD, exact=True)


def hidden_colour_beyond(rgba: np.ndarray, reach_px: int) -> int:
    """How many alpha-0 pixels hold colour with no alpha > 0 pixel within `reach_px` in x and in y."""
    return int(np.count_nonzero(_hidden_colour_beyond(rgba, reach_px)))


def _hidden_colour_beyond(rgba: np.ndarray, reach_px: int) -> np.ndarray:
    alpha = rgba[..., ALPHA]
    near_visible = offset_mask((alpha > 0).view(np.uint8), reach_px) > 0
    hidden: np.ndarray = np.asarray(rgba[..., :ALPHA].any(axis=-1))
    hidden &= alpha == 0
    hidden &= ~near_visible
    return hidden


def _decoded_hidden_colour_beyond(data: bytes, reach_px: int) -> int:
    """`hidden_colour_beyond` of the decoded `data`, a strip at a time (each with `reach_px` rows of
    context above and below), so only the decoded image itself is full-size."""
    with Image.open(io.BytesIO(data)) as decoded:
        decoded.load()
        width, height = decoded.size
        count = 0
        for top, bottom in strip_rows(width, height):
            above, below = min(top, reach_px), min(height - bottom, reach_px)
            strip = np.asarray(decoded.crop((0, top - above, width, bottom + below)).convert("RGBA"))
            hidden = _hidden_colour_beyond(strip, reach_px)[above : above + bottom - top]
            count += int(np.count_nonzero(hidden))
        return count


def _save(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()
