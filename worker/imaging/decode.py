"""Safe decoding: bytes -> an 8-bit sRGB image plus the source's own alpha, or a PermanentError."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from cutout_fleet.errors import ImageTooLarge, UndecodableImage

# Only raster formats we expect in a catalog.  Restricting Pillow's plugins keeps exotic
# decoders (EPS via Ghostscript, PSD, ...) out of reach of hostile uploads.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF")

# Truncated files must fail, not decode half-grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Register every plugin up front, before `formats=` is checked (multi-picture JPEGs open through JPEG).
Image.init()

_SRGB = ImageCms.createProfile("sRGB")


@dataclass(frozen=True)
class DecodedImage:
    rgb: Image.Image  # mode RGB, EXIF orientation applied, sRGB
    alpha: np.ndarray | None  # uint8 HxW when the source had transparency
    source_format: str


def decode_image(data: bytes, *, max_pixels: int, name: str = "image") -> DecodedImage:
    """Decode `data` or raise UndecodableImage / ImageTooLarge naming `name`."""
    if not data:
        raise UndecodableImage(f"{name}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below is the one that counts; Pillow's bomb warning is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"{name}: {width}x{height} is {width * height:,} pixels, over the limit of "
                    f"{max_pixels:,} (CUTOUT_LIMITS__MAX_PIXELS)"
                )
            source_format = image.format or "unknown"
            image.seek(0)  # animated GIF/WebP: the first frame
            image.load()
    except Image.DecompressionBombError as exc:
        # Pillow refuses absurd headers (over twice its own limit) inside open(), before our check.
        raise ImageTooLarge(
            f"{name}: {exc} Refused before decoding; the limit is {max_pixels:,} pixels "
            "(CUTOUT_LIMITS__MAX_PIXELS)"
        ) from exc
    except UnidentifiedImageError as exc:
        raise UndecodableImage(
            f"{name}: not a supported image (expected one of {', '.join(ALLOWED_FORMATS)})"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct_error()) as exc:
        raise UndecodableImage(f"{name}: the image data is corrupt or truncated ({exc})") from exc
    except MemoryError as exc:
        raise ImageTooLarge(f"{name}: decoding ran out of memory") from exc

    try:
        rgb, alpha = _split_alpha(_to_8bit(_to_srgb(_upright(image))))
    except (OSError, ValueError) as exc:
        raise UndecodableImage(f"{name}: cannot convert the image to RGB ({exc})") from exc
    return DecodedImage(rgb=rgb, alpha=alpha, source_format=source_format)


def struct_error() -> type[Exception]:
    import struct

    return struct.error


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block is ignored rather than failing the photo."""
    try:
        return ImageOps.exif_transpose(image) or image
    except (OSError, ValueError, KeyError, TypeError, SyntaxError):
        return image


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
        image = image.convert("RGBA" if _has_alpha(image) else "RGB")
    if image.mode not in ("RGB", "RGBA", "CMYK"):
        return image  # grey profiles: nothing to gain, and ImageCms output would need RGB input
    has_alpha = image.mode == "RGBA"
    try:
        converted = ImageCms.profileToProfile(
            image.convert("RGB") if has_alpha else image,
            source,
            _SRGB,
            outputMode="RGB",
            renderingIntent=ImageCms.Intent.PERCEPTUAL,
        )
    except (OSError, ImageCms.PyCMSError, ValueError):
        return image
    assert converted is not None
    if has_alpha:
        converted.putalpha(image.getchannel("A"))
    return converted


def _to_8bit(image: Image.Image) -> Image.Image:
    """Bring 16-bit, 32-bit integer and float images to 8 bits by scaling, not by clipping."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        # 16-bit modes always span 0..65535, even when this photo happens to be dark; only the
        # 32-bit "I" mode is ambiguous (some decoders widen 8- or 16-bit data into it).
        sixteen_bit = image.mode != "I" or values.max(initial=0) > 255
        scale = 257.0 if sixteen_bit else 1.0
        return Image.fromarray(np.clip(np.rint(values / scale), 0, 255).astype(np.uint8), mode="L")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if values.max(initial=0) <= 1.0:
            values = values * 255.0
        return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), mode="L")
    return image


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        "transparency" in image.info and image.mode in ("P", "L", "RGB")
    )


def _split_alpha(image: Image.Image) -> tuple[Image.Image, np.ndarray | None]:
    """RGB for the model (transparent areas flattened onto white) and the source alpha, if any."""
    if not _has_alpha(image):
        return image.convert("RGB"), None
    rgba = image.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"))
    white = Image.new("RGB", rgba.size, (255, 255, 255))
    white.paste(rgba, mask=rgba.getchannel("A"))
    return white, alpha.copy()
