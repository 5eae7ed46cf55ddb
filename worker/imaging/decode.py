"""Safe decoding: bytes -> an 8-bit sRGB image plus the source's own alpha, or a PermanentError."""

from __future__ import annotations

import contextlib
import io
import re
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import (
    Image,
    ImageCms,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    TiffImagePlugin,
    UnidentifiedImageError,
)

from cutout_fleet.errors import ImageTooLarge, UndecodableImage
from cutout_fleet.worker.imaging.budget import MemoryBudget
from cutout_fleet.worker.imaging.iso_formats import iso_container, require_decoder
from cutout_fleet.worker.imaging.strips import strip_rows

# Only raster formats we expect in a catalog.  Restricting Pillow's plugins keeps exotic
# decoders (EPS via Ghostscript, PSD, ...) out of reach of hostile uploads.  AVIF is Pillow's own
# plugin (libavif with dav1d in its wheels since 11.3); HEIF comes from the optional pillow-heif,
# registered on the first HEIF file (see docs/formats.md).
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF", "AVIF", "HEIF")

# Truncated files must fail, not decode half-grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Register every plugin up front, before `formats=` is checked (multi-picture JPEGs open through JPEG).
Image.init()

_SRGB = ImageCms.createProfile("sRGB")

# Encoders write about 10 scans (libjpeg's progressive script; optimised ones a few dozen at most), but
# every scan re-walks every block of the image: a few hundred KB of tiny scans cost minutes of CPU, spent
# in C calls that a soft time limit cannot interrupt.  Count them before decoding.
MAX_JPEG_SCANS = 100
# The next JPEG marker after entropy-coded data: 0xFF not followed by stuffing (00), RSTn or fill (FF).
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_SOS, _JPEG_EOI = 0xDA, 0xD9
_JPEG_MARKERS_WITHOUT_LENGTH = frozenset({0x01, 0xD8})  # TEM, SOI
_TIFF_TILE_WIDTH, _TIFF_TILE_LENGTH = 322, 323


@dataclass(frozen=True)
class DecodedImage:
    rgb: Image.Image  # mode RGB, EXIF orientation applied, sRGB
    alpha: np.ndarray | None  # uint8 HxW when the source had transparency
    source_format: str


def decode_image(
    data: bytes, *, max_pixels: int, budget: MemoryBudget | None = None, name: str = "image"
) -> DecodedImage:
    """Decode `data` or raise UndecodableImage / ImageTooLarge naming `name`.

    `budget` bounds the memory the whole pipeline would need for this image, checked from the header
    before any pixel is decoded; None leaves only the pixel limit.
    """
    if not data:
        raise UndecodableImage(f"{name}: the file is empty (0 bytes)")
    container = iso_container(data)
    if container is not None:
        require_decoder(container, name)
    # The ftyp brands pick the plugin: both would accept a file whose major brand is the generic mif1.
    formats = (container,) if container is not None else _registered(ALLOWED_FORMATS)
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below is the one that counts; Pillow's bomb warning is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=formats)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"{name}: {width}x{height} is {width * height:,} pixels, over the limit of "
                    f"{max_pixels:,} (CUTOUT_LIMITS__MAX_PIXELS)"
                )
            if budget is not None:
                budget.check(width, height, has_alpha=_has_alpha(image), name=name)
            _refuse_costly_decoding(image, data, max_pixels=max_pixels, name=name)
            source_format = image.format or "unknown"
            if source_format != "HEIF":
                # Animated GIF/WebP/AVIF: the first frame.  A HEIF file opens at its primary image,
                # which need not be the first (a burst, or a photo stored after its depth map).
                image.seek(0)
            image.load()
    except Image.DecompressionBombError as exc:
        # Pillow refuses absurd headers (over twice its own limit) inside open(), before our check.
        raise ImageTooLarge(
            f"{name}: {exc} Refused before decoding; the limit is {max_pixels:,} pixels "
            "(CUTOUT_LIMITS__MAX_PIXELS)"
        ) from exc
    except UnidentifiedImageError as exc:
        if container is not None:
            # The plugin refused a file whose header says it is its format: the file is broken.
            raise UndecodableImage(f"{name}: the {container} data is corrupt or truncated") from exc
        raise UndecodableImage(
            f"{name}: not a supported image (expected one of {', '.join(ALLOWED_FORMATS)})"
        ) from exc
    # libheif (through pillow-heif) reports failures it has no closer Python error for as RuntimeError.
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        IndexError,
        TypeError,
        RuntimeError,
        struct.error,
    ) as exc:
        reason = str(exc).strip()  # libheif ends its messages with a newline
        raise UndecodableImage(f"{name}: the image data is corrupt or truncated ({reason})") from exc
    except MemoryError as exc:
        raise ImageTooLarge(f"{name}: decoding ran out of memory") from exc

    try:
        # Each step releases the pixels of the image it replaces, so at most two full-size images
        # (plus the alpha) are alive at once.
        rgb, alpha = _split_alpha(_to_srgb(_to_8bit(_upright(image))))
    except (OSError, ValueError) as exc:
        raise UndecodableImage(f"{name}: cannot convert the image to RGB ({exc})") from exc
    return DecodedImage(rgb=rgb, alpha=alpha, source_format=source_format)


def _registered(formats: tuple[str, ...]) -> tuple[str, ...]:
    """The formats with a Pillow opener in this process (Image.open fails on an unknown name)."""
    return tuple(fmt for fmt in formats if fmt in Image.OPEN)


def _refuse_costly_decoding(image: Image.Image, data: bytes, *, max_pixels: int, name: str) -> None:
    """Refuse, before decoding, files that cost far more memory or time than their pixel count says."""
    if isinstance(image, JpegImagePlugin.JpegImageFile):
        scans = jpeg_scan_count(data, stop_after=MAX_JPEG_SCANS)
        if scans > MAX_JPEG_SCANS:
            raise ImageTooLarge(
                f"{name}: a JPEG with more than {MAX_JPEG_SCANS} scans (encoders write about 10); "
                "refused as a decompression bomb: re-save the photo"
            )
    elif isinstance(image, TiffImagePlugin.TiffImageFile):
        # The decoder allocates a whole tile, whatever the image size: a 16x16 image can claim a
        # 16384x16384 tile (1.5 GiB) in a file of under 1 MB.
        tile_w = int(image.tag_v2.get(_TIFF_TILE_WIDTH, 0))
        tile_h = int(image.tag_v2.get(_TIFF_TILE_LENGTH, 0))
        if tile_w * tile_h > max_pixels:
            raise ImageTooLarge(
                f"{name}: TIFF tiles of {tile_w}x{tile_h} are {tile_w * tile_h:,} pixels each, over the "
                f"limit of {max_pixels:,} (CUTOUT_LIMITS__MAX_PIXELS)"
            )


def jpeg_scan_count(data: bytes, *, stop_after: int) -> int:
    """Start-of-scan markers of the first image in a JPEG, counted up to `stop_after` + 1.

    Walks the marker segments by their lengths (so bytes inside EXIF thumbnails or ICC profiles are
    skipped) and stops at the end-of-image marker (so a second image or a motion-photo video after
    it is not counted: the decoder never reads them).
    """
    scans, position = 0, 2  # after SOI
    while scans <= stop_after:
        match = _JPEG_MARKER.search(data, position)
        if match is None:
            return scans
        start, marker = match.start(), data[match.start() + 1]
        if marker == _JPEG_EOI:
            return scans
        if marker in _JPEG_MARKERS_WITHOUT_LENGTH:
            position = start + 2
            continue
        length = int.from_bytes(data[start + 2 : start + 4], "big")
        if length < 2:
            return scans  # the decoder stops at a broken segment too
        scans += marker == _JPEG_SOS
        # After a scan header the entropy-coded data follows: the search above skips it.
        position = start + 2 + length
    return scans


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation in place (no copy when there is none); a broken EXIF block is ignored."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, SyntaxError):
        ImageOps.exif_transpose(image, in_place=True)
    return image


def _replaced(old: Image.Image, new: Image.Image) -> Image.Image:
    """`new`, with the pixels of `old` released now rather than when every reference to it is gone."""
    if new is not old:
        old.close()
    return new


def _to_srgb(image: Image.Image) -> Image.Image:
    """Convert pixels with an embedded ICC profile to sRGB, since outputs carry no profile."""
    icc = image.info.get("icc_profile")
    if not icc:
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (OSError, ImageCms.PyCMSError):
        return image  # an unreadable profile: keep the pixels as they are
    if image.mode in ("P", "PA") or (image.mode == "RGB" and "transparency" in image.info):
        # Palette colours need converting like any others, and a tRNS colour key would not
        # survive the conversion (ImageCms drops .info): go to RGB(A) first.
        image = _replaced(image, image.convert("RGBA" if _has_alpha(image) else "RGB"))
    if image.mode not in ("RGB", "RGBA", "CMYK"):
        return image  # grey profiles: nothing to gain, and ImageCms output would need RGB input
    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    colours = image.convert("RGB") if alpha is not None else image
    try:
        # RGB is converted in place: no second full-size copy.
        converted = ImageCms.profileToProfile(
            colours,
            source,
            _SRGB,
            outputMode="RGB",
            renderingIntent=ImageCms.Intent.PERCEPTUAL,
            inPlace=colours.mode == "RGB",
        )
    except (OSError, ImageCms.PyCMSError, ValueError):
        if colours is not image:
            colours.close()
        return image
    if converted is None:  # converted in place
        converted = colours
    if converted is not colours:
        colours.close()
    if image is not colours:
        image.close()
    if alpha is not None:
        converted.putalpha(alpha)
    return converted


def _to_8bit(image: Image.Image) -> Image.Image:
    """Bring 16-bit, 32-bit integer and float images to 8 bits by scaling, not by clipping."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit modes always span 0..65535, even when this photo happens to be dark; only the
        # 32-bit "I" mode is ambiguous (some decoders widen 8- or 16-bit data into it).
        sixteen_bit = image.mode != "I" or _maximum(image) > 255
        scale = 257.0 if sixteen_bit else 1.0
        return _replaced(image, _scaled_to_grey(image, lambda values: np.rint(values / scale)))
    if image.mode == "F":
        factor = 255.0 if _maximum(image) <= 1.0 else 1.0
        return _replaced(image, _scaled_to_grey(image, lambda values: values * factor))
    return image


def _maximum(image: Image.Image) -> float:
    """The largest pixel value, at least 0 (Pillow computes it in C, without a copy)."""
    extrema = image.getextrema()
    assert isinstance(extrema[1], int | float)  # one band
    return max(float(extrema[1]), 0.0)


def _scaled_to_grey(image: Image.Image, scale: Callable[[np.ndarray], np.ndarray]) -> Image.Image:
    """An "L" image of `scale(pixels)` clipped to 0..255, computed in float64 a strip at a time (a
    float64 copy of a whole 64 Mpx image would be 512 MB)."""
    width, height = image.size
    grey = np.empty((height, width), dtype=np.uint8)
    for top, bottom in strip_rows(width, height):
        values = np.asarray(image.crop((0, top, width, bottom)), dtype=np.float64)
        grey[top:bottom] = np.clip(scale(values), 0, 255)
    return Image.fromarray(grey)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        "transparency" in image.info and image.mode in ("P", "L", "RGB")
    )


def _split_alpha(image: Image.Image) -> tuple[Image.Image, np.ndarray | None]:
    """RGB for the model (transparent areas flattened onto white) and the source alpha, if any."""
    if not _has_alpha(image):
        return _replaced(image, image.convert("RGB") if image.mode != "RGB" else image), None
    rgba = _replaced(image, image.convert("RGBA") if image.mode != "RGBA" else image)
    alpha = rgba.getchannel("A")
    white = Image.new("RGB", rgba.size, (255, 255, 255))
    white.paste(rgba, mask=alpha)
    rgba.close()
    return white, np.array(alpha)
