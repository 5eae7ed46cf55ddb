"""Test images made in memory: files of every kind, crafted headers and ICC profiles, chunk parsers."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXIF_ORIENTATION_TAG = 0x0112
# sRGB primaries adapted to the D50 profile connection space (Bradford), as in every sRGB ICC profile.
_SRGB_D50_PRIMARIES = (
    (0.4360747, 0.2225045, 0.0139322),
    (0.3850649, 0.7168786, 0.0971045),
    (0.1430804, 0.0606169, 0.7141733),
)
_D50_WHITE = (0.9642, 1.0, 0.8249)


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    """`image` saved as `fmt` (a Pillow format name) into bytes."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def solid(mode: str, size_wh: tuple[int, int], colour: Any) -> Image.Image:
    return Image.new(mode, size_wh, colour)


def gradient_rgb(size_wh: tuple[int, int]) -> Image.Image:
    """An RGB image whose pixels differ (red ramps across, green down), so orientation and scaling show."""
    width, height = size_wh
    red = np.linspace(0, 255, width, dtype=np.float64)[np.newaxis, :].repeat(height, 0)
    green = np.linspace(0, 255, height, dtype=np.float64)[:, np.newaxis].repeat(width, 1)
    blue = np.full((height, width), 64.0)
    return Image.fromarray(np.rint(np.stack([red, green, blue], axis=-1)).astype(np.uint8), mode="RGB")


def jpeg_with_orientation(size_wh: tuple[int, int], orientation: int) -> bytes:
    """A JPEG stored `size_wh` whose EXIF says to display it with `orientation` (6: rotate 90° clockwise)."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    return encode(gradient_rgb(size_wh), "JPEG", exif=exif.tobytes(), quality=95)


def animated_gif(size_wh: tuple[int, int], colours: list[tuple[int, int, int]]) -> bytes:
    """A GIF with one solid frame per colour, first frame first."""
    frames = [Image.new("RGB", size_wh, colour) for colour in colours]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def png_chunk(chunk_type: bytes, data: bytes) -> bytes:
    """One PNG chunk with a correct CRC."""
    crc = zlib.crc32(chunk_type + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + chunk_type + data + struct.pack(">I", crc)


def png_claiming_size(width: int, height: int) -> bytes:
    """A well-formed PNG header (RGB, 8 bit) claiming `width` x `height`, with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )


def png_chunk_types(data: bytes) -> list[bytes]:
    """The chunk types of a PNG file, in order."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    types, position = [], 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        types.append(data[position + 4 : position + 8])
        position += 12 + length
    return types


def riff_chunk_types(data: bytes) -> list[bytes]:
    """The top-level chunk types inside a WebP (RIFF) file, in order."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP", "not a WebP"
    types, position = [], 12
    while position + 8 <= len(data):
        chunk_type = data[position : position + 4]
        (length,) = struct.unpack("<I", data[position + 4 : position + 8])
        types.append(chunk_type)
        position += 8 + length + (length & 1)
    return types


def _s15f16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_tag(xyz: tuple[float, float, float]) -> bytes:
    return b"XYZ " + b"\x00" * 4 + b"".join(_s15f16(v) for v in xyz)


def _desc_tag(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\x00"
    return (
        b"desc"
        + b"\x00" * 4
        + struct.pack(">I", len(ascii_text))
        + ascii_text
        + b"\x00" * 8  # no Unicode description
        + b"\x00" * 3
        + b"\x00" * 67  # no ScriptCode description
    )


def linear_srgb_icc_profile() -> bytes:
    """An ICC v2 RGB display profile: sRGB primaries with a linear tone curve (gamma 1.0).

    Pixels tagged with it are linear light, so a stored 128 is much brighter in sRGB (about 188).
    Built by hand so the test needs no profile file from the system.
    """
    linear_curve = b"curv" + b"\x00" * 4 + struct.pack(">I", 0)  # no entries: the identity curve
    tags = [
        (b"desc", _desc_tag("linear sRGB (test)")),
        (b"wtpt", _xyz_tag(_D50_WHITE)),
        (b"rXYZ", _xyz_tag(_SRGB_D50_PRIMARIES[0])),
        (b"gXYZ", _xyz_tag(_SRGB_D50_PRIMARIES[1])),
        (b"bXYZ", _xyz_tag(_SRGB_D50_PRIMARIES[2])),
        (b"rTRC", linear_curve),
        (b"gTRC", linear_curve),
        (b"bTRC", linear_curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        padded = data + b"\x00" * (-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += padded
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + b"\x00" * 4  # preferred CMM
        + struct.pack(">I", 0x02100000)  # version 2.1
        + b"mntr"
        + b"RGB "
        + b"XYZ "
        + b"\x00" * 12  # date
        + b"acsp"
        + b"\x00" * 24  # platform, flags, manufacturer, model, attributes
        + struct.pack(">I", 0)  # perceptual intent
        + b"".join(_s15f16(v) for v in _D50_WHITE)
        + b"\x00" * 4  # creator
        + b"\x00" * 44  # profile id and reserved
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def random_mask(shape_hw: tuple[int, int], seed: int) -> np.ndarray:
    """A uint8 mask with values in all of 0..255, reproducible from `seed`."""
    return np.random.default_rng(seed).integers(0, 256, size=shape_hw, dtype=np.uint8)


def blobs_mask(shape_hw: tuple[int, int], seed: int) -> np.ndarray:
    """A uint8 mask that is mostly 0 with a few 255 pixels, so growing and shrinking both show."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(shape_hw) < 0.1, 255, 0).astype(np.uint8)
