"""A corpus of hostile and unusual files, built in memory, each with what the fleet must do with it.

Every file is either processed (and its cutout has a known size, after EXIF orientation), failed alone
with a stable error code, or never enqueued because its extension is not an image's.  The sizes of the
decompression bombs are derived from CORPUS_MAX_PIXELS, the limit the tests give the worker.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from bench.memory_peak import synthetic_png
from tests.support.images import (
    PNG_SIGNATURE,
    animated_gif,
    encode,
    gradient_rgb,
    jpeg_with_orientation,
    png_chunk,
    png_claiming_size,
)

# The pixel limit (CUTOUT_LIMITS__MAX_PIXELS) the corpus is built for: the real bombs are the largest
# square under it and the smallest over it.  20 Mpx is a 5472x3648 camera frame, and keeps the worker's
# peak memory modest.
CORPUS_MAX_PIXELS = 20_000_000
# What the crafted headers claim: far past any limit, and past Pillow's own bomb check too.
ABSURD_SIDE_PX = 65_000
ORIENTED_STORED_WH = (40, 24)  # stored size of the EXIF-orientation JPEGs; 5..8 swap it

Outcome = Literal["succeeded", "failed", "ignored"]


@dataclass(frozen=True)
class Expect:
    """What must happen to one corpus file."""

    outcome: Outcome
    size_wh: tuple[int, int] | None = None  # the cutout's size, when it succeeds
    error_code: str | None = None  # the report's error_code, when it fails

    @classmethod
    def ok(cls, width: int, height: int) -> Expect:
        return cls("succeeded", size_wh=(width, height))

    @classmethod
    def fails(cls, error_code: str) -> Expect:
        return cls("failed", error_code=error_code)

    @classmethod
    def ignored(cls) -> Expect:
        """Not an image extension: the producer skips it and counts it, nothing is enqueued."""
        return cls("ignored")


# Failures decided before any decoding (by the producer's claims), not by the file's bytes.
DECIDED_BEFORE_DECODING = frozenset({"output_collision"})
UNDECODABLE = Expect.fails("undecodable")
TOO_LARGE = Expect.fails("image_too_large")


def hostile_corpus() -> dict[str, tuple[bytes, Expect]]:
    """Object key (relative, extension as a user would have it) -> (file bytes, expectation)."""
    corpus: dict[str, tuple[bytes, Expect]] = {}
    stems: set[str] = set()
    for section in (_garbage, _bombs, _corrupt_png, _modes, _orientations, _animations, _names, _shapes):
        for key, entry in section().items():
            # a.jpg and a.png would both be written to a.png (an output collision): keep stems unique.
            stem = key.rsplit(".", 1)[0]
            assert stem not in stems, f"two corpus files share the stem {stem}"
            stems.add(stem)
            corpus[key] = entry
    return corpus


# --- Not images at all ----------------------------------------------------------------------------

HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
    b"<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p></body></html>\n"
)
SVG_LOGO = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">'
    b'<circle cx="32" cy="32" r="30" fill="#c00"/></svg>\n'
)


def _garbage() -> dict[str, tuple[bytes, Expect]]:
    return {
        "garbage/zero-bytes.jpg": (b"", UNDECODABLE),
        "garbage/random-bytes.jpg": (np.random.default_rng(11).bytes(4096), UNDECODABLE),
        "garbage/random-noise.png": (np.random.default_rng(12).bytes(300), UNDECODABLE),
        "garbage/error-page.jpg": (HTML_ERROR_PAGE, UNDECODABLE),
        "garbage/logo.svg": (SVG_LOGO, Expect.ignored()),
        "garbage/logo-svg-named.png": (SVG_LOGO, UNDECODABLE),
        "garbage/truncated-jpeg.jpg": (_truncated(encode(_noise((96, 64)), "JPEG", quality=90)), UNDECODABLE),
        "garbage/truncated-png.png": (_truncated(encode(_noise((96, 64)), "PNG")), UNDECODABLE),
        "garbage/truncated-header.png": (encode(gradient_rgb((8, 8)), "PNG")[:20], UNDECODABLE),
        "garbage/jpeg-signature-only.jpg": (b"\xff\xd8\xff\xe0", UNDECODABLE),
    }


def _noise(size_wh: tuple[int, int]) -> Image.Image:
    """Incompressible pixels, so cutting a file short really cuts into its pixel data."""
    width, height = size_wh
    values = np.random.default_rng(7).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(values, mode="RGB")


def _truncated(data: bytes) -> bytes:
    return data[: len(data) * 6 // 10]


# --- Decompression bombs ------------------------------------------------------------------------------


def _bombs() -> dict[str, tuple[bytes, Expect]]:
    side = math.isqrt(CORPUS_MAX_PIXELS)  # side² <= limit < (side + 1)²
    return {
        "bombs/png-header-65000.png": (png_claiming_size(ABSURD_SIDE_PX, ABSURD_SIDE_PX), TOO_LARGE),
        "bombs/gif-header-65000.gif": (gif_claiming_size(ABSURD_SIDE_PX, ABSURD_SIDE_PX), TOO_LARGE),
        "bombs/jpeg-header-65000.jpg": (jpeg_claiming_size(ABSURD_SIDE_PX, ABSURD_SIDE_PX), TOO_LARGE),
        "bombs/tiff-header-65000.tif": (tiff_claiming_size(ABSURD_SIDE_PX, ABSURD_SIDE_PX), TOO_LARGE),
        "bombs/bmp-header-65000.bmp": (bmp_claiming_size(ABSURD_SIDE_PX, ABSURD_SIDE_PX), TOO_LARGE),
        "bombs/webp-header-16383.webp": (webp_claiming_size(16_383, 16_383), TOO_LARGE),
        # A 10x10 screen whose first frame is larger than the limit: the frame, not the screen, counts.
        "bombs/gif-frame-outside-screen.gif": (
            gif_claiming_size(10, 10, frame_wh=(side + 1, side + 1)),
            TOO_LARGE,
        ),
        # Within the pixel limit, but far costlier to decode than the pixel count says.
        "bombs/jpeg-10000-scans.jpg": (jpeg_scan_bomb(side, extra_scans=10_000), TOO_LARGE),
        "bombs/tiff-16x16-with-a-16384-tile.tif": (
            tiled_tiff((16, 16), (16_384, 16_384), zlib_level=1),
            TOO_LARGE,
        ),
        # Real bombs: a few KB that decode to ~20 Mpx.  Just under the limit it must be processed.
        "bombs/real-just-under-limit.png": (zero_png(side, side), Expect.ok(side, side)),
        "bombs/real-just-over-limit.png": (zero_png(side + 1, side + 1), TOO_LARGE),
        # Issue 11, row 2: 16-bit and 8-bit grey PNGs of a few dozen KB that decode to the whole limit
        # (the 16-bit one used to cost four float64 copies).  The reported files are 8000x8000, over
        # CORPUS_MAX_PIXELS, where they would only meet the pixel limit: tests/integration/test_memory.py
        # runs those at 64 Mpx and checks the peak memory; here they go through a real worker at 20 Mpx.
        "bombs/grey-16-bit-under-limit.png": (synthetic_png("grey16", side, side), Expect.ok(side, side)),
        "bombs/grey-8-bit-under-limit.png": (synthetic_png("grey8", side, side), Expect.ok(side, side)),
    }


def zero_png(width: int, height: int) -> bytes:
    """A real 1-bit all-black PNG: 20 Mpx in about 2.5 KB (deflate's best ratio on 2.5 MB of zero bits)."""
    return encode(Image.new("1", (width, height), 0), "PNG", optimize=True)


def gif_claiming_size(width: int, height: int, *, frame_wh: tuple[int, int] | None = None) -> bytes:
    """A GIF89a whose logical screen is `width` x `height` (and first frame `frame_wh`), with no pixels."""
    frame_w, frame_h = frame_wh or (width, height)
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # global palette of 2 colours
    palette = b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"," + struct.pack("<HHHHB", 0, 0, frame_w, frame_h, 0)
    # LZW, minimum code size 2: one 3-bit clear code (4) then end-of-information (5), packed LSB first.
    pixels = b"\x02" + b"\x01" + bytes([4 | 5 << 3]) + b"\x00"
    return b"GIF89a" + screen + palette + descriptor + pixels + b";"


def jpeg_claiming_size(width: int, height: int) -> bytes:
    """A real 8x8 baseline JPEG whose SOF0 frame header is rewritten to claim `width` x `height`."""
    data = bytearray(encode(Image.new("RGB", (8, 8), (90, 120, 150)), "JPEG", quality=80))
    sof = data.index(b"\xff\xc0")
    # FFC0, length (2 bytes), precision (1 byte), then height and width.
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


_TIFF_SHORT, _TIFF_LONG = 3, 4
_TIFF_STRIP_OFFSETS, _TIFF_STRIP_BYTE_COUNTS = 273, 279
_TIFF_TILE_OFFSETS, _TIFF_TILE_BYTE_COUNTS = 324, 325
_TIFF_GREY_TAGS = {
    258: (_TIFF_SHORT, [8]),  # BitsPerSample
    262: (_TIFF_SHORT, [1]),  # PhotometricInterpretation: BlackIsZero
    277: (_TIFF_SHORT, [1]),  # SamplesPerPixel
}


def little_endian_tiff(tags: dict[int, tuple[int, list[int]]], blobs: list[bytes], *, tiled: bool) -> bytes:
    """A TIFF with one IFD of `tags` (tag -> (type, values)) and `blobs` (strips or tiles) after it.

    The blobs' offsets and byte counts are filled in; arrays longer than 4 bytes go between IFD and blobs.
    """
    offsets_tag, counts_tag = (
        (_TIFF_TILE_OFFSETS, _TIFF_TILE_BYTE_COUNTS)
        if tiled
        else (_TIFF_STRIP_OFFSETS, _TIFF_STRIP_BYTE_COUNTS)
    )
    tags = {**tags, counts_tag: (_TIFF_LONG, [len(blob) for blob in blobs]), offsets_tag: (_TIFF_LONG, [])}
    tags[offsets_tag] = (_TIFF_LONG, [0] * len(blobs))  # sized now, filled once the layout is known

    def packed(kind: int, values: list[int]) -> bytes:
        return b"".join(struct.pack("<I" if kind == _TIFF_LONG else "<H", v) for v in values)

    ifd_end = 8 + 2 + 12 * len(tags) + 4
    arrays_size = sum(len(packed(*entry)) for entry in tags.values() if len(packed(*entry)) > 4)
    blob_offsets, position = [], ifd_end + arrays_size
    for blob in blobs:
        blob_offsets.append(position)
        position += len(blob)
    tags[offsets_tag] = (_TIFF_LONG, blob_offsets)
    ifd, arrays = struct.pack("<H", len(tags)), b""
    for tag in sorted(tags):
        kind, values = tags[tag]
        data = packed(kind, values)
        if len(data) > 4:
            field, arrays = struct.pack("<I", ifd_end + len(arrays)), arrays + data
        else:
            field = data.ljust(4, b"\x00")
        ifd += struct.pack("<HHI", tag, kind, len(values)) + field
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 4 + arrays + b"".join(blobs)


def tiff_claiming_size(width: int, height: int) -> bytes:
    """An uncompressed grey TIFF whose one strip is 16 bytes, while its tags claim `width` x `height`."""
    tags = {
        **_TIFF_GREY_TAGS,
        256: (_TIFF_LONG, [width]),
        257: (_TIFF_LONG, [height]),
        259: (_TIFF_SHORT, [1]),  # no compression
        278: (_TIFF_LONG, [height]),  # RowsPerStrip
    }
    return little_endian_tiff(tags, [b"\x80" * 16], tiled=False)


def tiled_tiff(size_wh: tuple[int, int], tile_wh: tuple[int, int], *, zlib_level: int = 6) -> bytes:
    """A deflate-compressed grey TIFF of mid-grey tiles; the tiles may be far larger than the image."""
    (width, height), (tile_w, tile_h) = size_wh, tile_wh
    count = -(-width // tile_w) * -(-height // tile_h)
    tags = {
        **_TIFF_GREY_TAGS,
        256: (_TIFF_LONG, [width]),
        257: (_TIFF_LONG, [height]),
        259: (_TIFF_SHORT, [8]),  # Adobe deflate
        322: (_TIFF_LONG, [tile_w]),
        323: (_TIFF_LONG, [tile_h]),
    }
    return little_endian_tiff(tags, [_deflated_grey(tile_w * tile_h, zlib_level)] * count, tiled=True)


def _deflated_grey(size: int, level: int) -> bytes:
    """zlib of `size` bytes of 0x80, compressed a megabyte at a time (a giant tile never sits in memory)."""
    compressor, block = zlib.compressobj(level), b"\x80" * (1 << 20)
    parts = [compressor.compress(block) for _ in range(size // len(block))]
    parts.append(compressor.compress(block[: size % len(block)]))
    return b"".join([*parts, compressor.flush()])


def jpeg_scan_bomb(side: int, extra_scans: int) -> bytes:
    """A progressive grey JPEG of `side` x `side` whose last scan is repeated `extra_scans` times.

    Each copy is ~36 bytes but makes the decoder walk every block of the image once more: 10,000 copies
    at 20 Mpx (360 KB) are about three minutes of CPU, in C.  libjpeg only warns about them.
    """
    data = encode(Image.new("L", (side, side), 0), "JPEG", progressive=True, quality=50)
    last_scan, end_of_image = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    return data[:end_of_image] + data[last_scan:end_of_image] * extra_scans + data[end_of_image:]


def bmp_claiming_size(width: int, height: int) -> bytes:
    """A 24-bit BMP header (BITMAPINFOHEADER) claiming `width` x `height`, followed by 16 bytes of pixels."""
    pixels = b"\x00" * 16
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    header = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info))
    return header + info + pixels


def webp_claiming_size(width: int, height: int) -> bytes:
    """A lossless WebP (VP8L) header claiming `width` x `height` (WebP's maximum is 16383) and no pixels."""
    bits = (width - 1) | (height - 1) << 14  # 14 bits each; alpha hint 0, version 0
    payload = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 11
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


# --- Corrupt PNG data -----------------------------------------------------------------------------------

_PNG_WH = (24, 16)


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, position = [], len(PNG_SIGNATURE)
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        chunks.append((data[position + 4 : position + 8], data[position + 8 : position + 8 + length]))
        position += 12 + length
    return chunks


def _png_with(replace: dict[bytes, bytes], *, stale_crc_on: bytes | None = None) -> bytes:
    """The reference PNG with some chunks' data replaced; `stale_crc_on` keeps that chunk's old CRC.

    With no replacement for that chunk, its CRC is inverted instead.
    """
    out = PNG_SIGNATURE
    for chunk_type, data in _png_chunks(encode(gradient_rgb(_PNG_WH), "PNG")):
        chunk = png_chunk(chunk_type, replace.get(chunk_type, data))
        if chunk_type == stale_crc_on:
            old_crc = png_chunk(chunk_type, data)[-4:]
            bad_crc = old_crc if chunk_type in replace else bytes(b ^ 0xFF for b in old_crc)
            chunk = chunk[:-4] + bad_crc
        out += chunk
    return out


def _corrupt_png() -> dict[str, tuple[bytes, Expect]]:
    good_idat = dict(_png_chunks(encode(gradient_rgb(_PNG_WH), "PNG")))[b"IDAT"]
    flipped_idat = bytearray(good_idat)
    flipped_idat[len(flipped_idat) // 2] ^= 0x10
    return {
        # Pillow checks the CRC of the chunks it parses at open (IHDR here): the file is refused.
        "corrupt/bad-crc-ihdr.png": (_png_with({}, stale_crc_on=b"IHDR"), UNDECODABLE),
        # Pillow does not check IDAT CRCs (nor do browsers), but zlib's own Adler-32 covers the same
        # bytes: with intact pixel data only the checksum is wrong and the pixels decode exactly...
        "corrupt/bad-crc-idat.png": (_png_with({}, stale_crc_on=b"IDAT"), Expect.ok(*_PNG_WH)),
        # ...while a byte really damaged in transit (the CRC left stale) fails in zlib.
        "corrupt/flipped-byte-idat.png": (
            _png_with({b"IDAT": bytes(flipped_idat)}, stale_crc_on=b"IDAT"),
            UNDECODABLE,
        ),
        "corrupt/bad-zlib-idat.png": (
            _png_with({b"IDAT": b"\x78\x9c" + np.random.default_rng(5).bytes(200)}),
            UNDECODABLE,
        ),
        "corrupt/short-zlib-idat.png": (_png_with({b"IDAT": good_idat[: len(good_idat) // 2]}), UNDECODABLE),
        "corrupt/no-idat.png": (_png_with({b"IDAT": b""}), UNDECODABLE),
    }


# --- Pixel modes -------------------------------------------------------------------------------------------


def rgb16_png(size_wh: tuple[int, int]) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one, so it is assembled by hand)."""
    width, height = size_wh
    values = np.asarray(gradient_rgb(size_wh), dtype=np.uint16) * 257
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def _palette_with_transparency() -> Image.Image:
    image = Image.new("P", (20, 10), 0)
    image.putpalette([200, 10, 10, 0, 0, 255, 10, 200, 10] + [0] * (768 - 9))
    for x in range(10):
        for y in range(10):
            image.putpixel((x, y), 1 + (x + y) % 2)
    return image


def _modes() -> dict[str, tuple[bytes, Expect]]:
    grey16 = Image.fromarray(
        np.linspace(0, 65535, 30 * 20, dtype=np.float64).reshape(20, 30).astype(np.uint16)
    )
    cmyk = gradient_rgb((32, 24)).convert("CMYK")
    rgba = gradient_rgb((30, 20)).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((30, 20)))
    palette = _palette_with_transparency()
    bilevel = Image.new("1", (33, 17), 0)
    bilevel.paste(1, (0, 0, 16, 17))
    return {
        "modes/cmyk-jpeg.jpg": (encode(cmyk, "JPEG", quality=90), Expect.ok(32, 24)),
        "modes/cmyk-tiff.tif": (encode(cmyk, "TIFF"), Expect.ok(32, 24)),
        "modes/rgb-16-bit.png": (rgb16_png((30, 20)), Expect.ok(30, 20)),
        "modes/grey-16-bit-png.png": (encode(grey16, "PNG"), Expect.ok(30, 20)),
        "modes/grey-16-bit-tiff.tif": (encode(grey16, "TIFF"), Expect.ok(30, 20)),
        "modes/grey-alpha.png": (encode(Image.new("LA", (30, 20), (100, 128)), "PNG"), Expect.ok(30, 20)),
        "modes/1-bit.png": (encode(bilevel, "PNG"), Expect.ok(33, 17)),
        "modes/1-bit-group4.tif": (encode(bilevel, "TIFF", compression="group4"), Expect.ok(33, 17)),
        "modes/palette-transparent-png.png": (encode(palette, "PNG", transparency=0), Expect.ok(20, 10)),
        "modes/palette-transparent-gif.gif": (encode(palette, "GIF", transparency=0), Expect.ok(20, 10)),
        "modes/rgba-png.png": (encode(rgba, "PNG"), Expect.ok(30, 20)),
        "modes/rgba-webp.webp": (encode(rgba, "WEBP", lossless=True), Expect.ok(30, 20)),
        "modes/rgba-tiff.tif": (encode(rgba, "TIFF", compression="tiff_lzw"), Expect.ok(30, 20)),
        "modes/grey.jpg": (encode(gradient_rgb((30, 20)).convert("L"), "JPEG"), Expect.ok(30, 20)),
        "modes/progressive.jpg": (
            encode(gradient_rgb((30, 20)), "JPEG", progressive=True, quality=85),
            Expect.ok(30, 20),
        ),
        "modes/bmp-24-bit.bmp": (encode(gradient_rgb((30, 20)), "BMP"), Expect.ok(30, 20)),
        "modes/bmp-8-bit-palette.bmp": (
            encode(palette.convert("RGB").quantize(16), "BMP"),
            Expect.ok(20, 10),
        ),
        "modes/bmp-32-bit-alpha.bmp": (encode(rgba, "BMP"), Expect.ok(30, 20)),
        "modes/grey-tiled.tif": (tiled_tiff((40, 30), (16, 16)), Expect.ok(40, 30)),
        "modes/rgb-deflate.tif": (
            encode(gradient_rgb((30, 20)), "TIFF", compression="tiff_deflate"),
            Expect.ok(30, 20),
        ),
    }


# --- EXIF orientation -----------------------------------------------------------------------------------


def _orientations() -> dict[str, tuple[bytes, Expect]]:
    width, height = ORIENTED_STORED_WH
    entries = {}
    for orientation in range(1, 9):
        # 5..8 involve a transpose: the displayed (and cutout) size swaps width and height.
        size = (height, width) if orientation >= 5 else (width, height)
        data = jpeg_with_orientation(ORIENTED_STORED_WH, orientation)
        entries[f"exif/orientation-{orientation}.jpg"] = (data, Expect.ok(*size))
    return entries


# --- Animations: the first frame is processed ----------------------------------------------------------


def animated_webp(size_wh: tuple[int, int]) -> bytes:
    frames = [Image.new("RGB", size_wh, colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    return encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)


def _animations() -> dict[str, tuple[bytes, Expect]]:
    return {
        "animated/three-frames-gif.gif": (
            animated_gif((26, 14), [(255, 0, 0), (0, 0, 255), (0, 255, 0)]),
            Expect.ok(26, 14),
        ),
        "animated/three-frames-webp.webp": (animated_webp((26, 14)), Expect.ok(26, 14)),
    }


# --- Names that lie or shout ----------------------------------------------------------------------------


def _names() -> dict[str, tuple[bytes, Expect]]:
    picture = gradient_rgb((36, 22))
    return {
        "names/really-a-png.jpg": (encode(picture, "PNG"), Expect.ok(36, 22)),
        "names/really-a-jpeg.png": (encode(picture, "JPEG"), Expect.ok(36, 22)),
        "names/really-a-webp.gif": (encode(picture, "WEBP"), Expect.ok(36, 22)),
        "names/really-a-bmp.tiff": (encode(picture, "BMP"), Expect.ok(36, 22)),
        "names/shouting.JPEG": (encode(picture, "JPEG"), Expect.ok(36, 22)),
        "names/upper-case.JPG": (encode(picture, "JPEG"), Expect.ok(36, 22)),
        "names/Mixed.Png": (encode(picture, "PNG"), Expect.ok(36, 22)),
        "names/png-as-UPPER.JPEG": (encode(picture, "PNG"), Expect.ok(36, 22)),
        "names/really-a-ppm.jpg": (encode(picture, "PPM"), UNDECODABLE),  # a format we do not accept
        # Keys an HTTP header cannot carry as they are (issue 11, row 1): metadata is RFC 2047 encoded.
        "names/cr\rx.png": (encode(picture, "PNG"), Expect.ok(36, 22)),
        "names/ünï 𝄞.png": (encode(picture, "PNG"), Expect.ok(36, 22)),
        # A key that a spreadsheet would run as a formula (row 7): the CSV report neutralises it.
        'names/=HYPERLINK("http://x","y").png': (encode(picture, "PNG"), Expect.ok(36, 22)),
        "names/-2+3.jpg": (b"not an image", UNDECODABLE),
        # Three spellings of one path (row 5): output keys are normalised, the first listed wins.
        "names/dots/./a.png": (encode(picture, "PNG"), Expect.ok(36, 22)),
        "names/dots//a.png": (encode(picture, "PNG"), Expect.fails("output_collision")),
        "names/dots/a.png": (encode(picture, "PNG"), Expect.fails("output_collision")),
    }


# --- Extreme shapes -------------------------------------------------------------------------------------


def _shapes() -> dict[str, tuple[bytes, Expect]]:
    return {
        "shapes/1x1-png.png": (encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"), Expect.ok(1, 1)),
        "shapes/1x1-jpeg.jpg": (encode(Image.new("RGB", (1, 1), (10, 20, 30)), "JPEG"), Expect.ok(1, 1)),
        "shapes/1x1-gif.gif": (encode(Image.new("P", (1, 1), 0), "GIF"), Expect.ok(1, 1)),
        "shapes/4000x50.jpg": (encode(gradient_rgb((4000, 50)), "JPEG", quality=85), Expect.ok(4000, 50)),
        "shapes/50x4000.png": (encode(gradient_rgb((50, 4000)), "PNG"), Expect.ok(50, 4000)),
        "shapes/4000x1.webp": (encode(gradient_rgb((4000, 1)), "WEBP"), Expect.ok(4000, 1)),
    }


def corpus_size_bytes(corpus: dict[str, tuple[bytes, Expect]]) -> int:
    return sum(len(data) for data, _ in corpus.values())


def describe(data: bytes) -> str:
    """What Pillow says a file is, for failure messages ('PNG 24x16 RGB' or 'unidentified')."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return f"{image.format} {image.width}x{image.height} {image.mode}"
    except Exception:  # a test helper: any failure just means "not an image Pillow knows"
        return "unidentified"
