"""The HEIC and AVIF test files in tests/data/formats/, and the pattern the tests expect them to show.

Regenerate them from the repository root, with the `heif` extra installed:

    python -m tests.support.make_modern_formats

AVIF comes from Pillow's own encoder (libaom in its wheels), HEIC from pillow-heif (x265).  Pillow
writes only 8-bit AVIF, so the 10-bit one comes from libavif's `avifenc` (Debian: libavif-bin); without
it that file is left as it is.  Encoders change their bytes from one version to the next, so the
files are committed and the tests compare decoded pixels within a codec's tolerance, never bytes.
See tests/data/formats/README.md for what each file is and what made it.
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support.images import EXIF_ORIENTATION_TAG, PNG_SIGNATURE, png_chunk
from tests.support.paths import TESTS_DIR

FORMATS_DIR = TESTS_DIR / "data" / "formats"
SIZE_WH = (64, 48)
# One colour per quadrant, far apart, so that neither lossy coding nor chroma subsampling can blur one
# into another, and any rotation or mirroring shows.
TOP_LEFT = (220, 30, 30)
TOP_RIGHT = (30, 200, 40)
BOTTOM_LEFT = (30, 40, 210)
BOTTOM_RIGHT = (240, 240, 240)
# The alpha variant: opaque, half and fully transparent thirds, left to right.
ALPHA_THIRDS = (255, 128, 0)
# EXIF orientation 6: display the stored pixels rotated 90° clockwise.
ORIENTATION = 6
# The first, non-primary image of the multi-image HEIC: a colour the pattern does not have.
DECOY_COLOUR = (250, 220, 0)
DECOY_SIZE_WH = (32, 24)
QUALITY = 90
HIGH_BIT_DEPTH = 10
EIGHT_TO_SIXTEEN_BITS = 257  # 255 * 257 = 65535


def quadrants(size_wh: tuple[int, int] = SIZE_WH) -> np.ndarray:
    """The pattern as uint8 HxWx3."""
    width, height = size_wh
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[: height // 2, : width // 2] = TOP_LEFT
    pixels[: height // 2, width // 2 :] = TOP_RIGHT
    pixels[height // 2 :, : width // 2] = BOTTOM_LEFT
    pixels[height // 2 :, width // 2 :] = BOTTOM_RIGHT
    return pixels


def quadrant_image(size_wh: tuple[int, int] = SIZE_WH) -> Image.Image:
    return Image.fromarray(quadrants(size_wh), mode="RGB")


def alpha_thirds(size_wh: tuple[int, int] = SIZE_WH) -> np.ndarray:
    """The alpha of the alpha variant as uint8 HxW."""
    width, height = size_wh
    alpha = np.empty((height, width), dtype=np.uint8)
    for index, value in enumerate(ALPHA_THIRDS):
        alpha[:, index * width // 3 : (index + 1) * width // 3] = value
    return alpha


def rgba_image(size_wh: tuple[int, int] = SIZE_WH) -> Image.Image:
    return Image.fromarray(np.dstack([quadrants(size_wh), alpha_thirds(size_wh)]), mode="RGBA")


def exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    return exif.tobytes()


def encode_avif(image: Image.Image, **params: object) -> bytes:
    """`image` as AVIF, by Pillow's own encoder."""
    buffer = io.BytesIO()
    image.save(buffer, "AVIF", quality=QUALITY, **params)
    return buffer.getvalue()


def encode_heic(image: Image.Image, **params: object) -> bytes:
    """`image` as HEIC, by pillow-heif (x265)."""
    import pillow_heif

    buffer = io.BytesIO()
    pillow_heif.from_pillow(image).save(buffer, quality=QUALITY, **params)
    return buffer.getvalue()


def heic_primary_second() -> bytes:
    """Two images, the decoy first and the pattern second, marked primary: a reader must take the second."""
    import pillow_heif

    heif = pillow_heif.from_pillow(Image.new("RGB", DECOY_SIZE_WH, DECOY_COLOUR))
    heif.add_from_pillow(quadrant_image())
    buffer = io.BytesIO()
    heif.save(buffer, quality=QUALITY, primary_index=1)
    return buffer.getvalue()


def sixteen_bit_quadrants() -> np.ndarray:
    """The pattern as uint16 HxWx3 spanning 0..65535: 8-bit c becomes c * 257."""
    return quadrants().astype(np.uint16) * EIGHT_TO_SIXTEEN_BITS


def heic_10_bit() -> bytes:
    """The pattern as a 10-bit HEIC (pillow-heif writes 16-bit input as 10-bit)."""
    import pillow_heif

    pixels = sixteen_bit_quadrants()
    heif = pillow_heif.from_bytes(mode="RGB;16", size=SIZE_WH, data=pixels.tobytes())
    buffer = io.BytesIO()
    heif.save(buffer, quality=QUALITY)
    return buffer.getvalue()


def png_16_bit_rgb(pixels: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (Pillow cannot write one), as input for avifenc."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[row].astype(">u2").tobytes() for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # 16 bits, RGB
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def avif_10_bit() -> bytes | None:
    """The pattern as a 10-bit AVIF made by avifenc; None when avifenc is not installed."""
    avifenc = shutil.which("avifenc")
    if avifenc is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.png", Path(folder) / "out.avif"
        source.write_bytes(png_16_bit_rgb(sixteen_bit_quadrants()))
        # Quantizers 0..10 of 63: near-lossless, so the tests' tolerance stays small.
        options = ["--depth", str(HIGH_BIT_DEPTH), "--speed", "8", "--min", "0", "--max", "10"]
        command = [avifenc, *options, str(source), str(target)]
        subprocess.run(command, check=True, capture_output=True)
        return target.read_bytes()


# File name -> how to make it.
FILES: dict[str, Callable[[], bytes | None]] = {
    "pattern.avif": lambda: encode_avif(quadrant_image()),
    "pattern.heic": lambda: encode_heic(quadrant_image()),
    "alpha.avif": lambda: encode_avif(rgba_image()),
    "alpha.heic": lambda: encode_heic(rgba_image()),
    "orientation6.avif": lambda: encode_avif(quadrant_image(), exif=exif_with_orientation(ORIENTATION)),
    "orientation6.heic": lambda: encode_heic(quadrant_image(), exif=exif_with_orientation(ORIENTATION)),
    "pattern-10bit.avif": avif_10_bit,
    "pattern-10bit.heic": heic_10_bit,
    "primary-second.heic": heic_primary_second,
}


def path(name: str) -> Path:
    return FORMATS_DIR / name


def main() -> int:
    FORMATS_DIR.mkdir(parents=True, exist_ok=True)
    for name, make in FILES.items():
        data = make()
        if data is None:
            print(f"{name}: kept as it is (avifenc is not installed; Debian: apt-get install libavif-bin)")
            continue
        path(name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
