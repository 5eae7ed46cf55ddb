"""Peak resident memory of one `make_cutout` on a 64 Mpx image, each case in a fresh child process.

For each case a new interpreter (multiprocessing "spawn") loads the real u2netp through the worker's own
`SessionPool`, runs a small warm-up image a few times (onnxruntime plans its memory on the first run and
allocates it on the second: ~200 MiB more), so the model's buffers are part of the baseline, then
`make_cutout` on the case's PNG with the default `ImageLimits` and options (PNG output, transparent).
Per case it prints the baseline (RSS after the warm-up), the peak (VmHWM; ru_maxrss agrees), the
increase over the baseline, and that increase per megapixel.

    CUTOUT_MODEL_DIR=/path/to/models python -m bench.memory_peak [--json] [--side 8000] [--format webp]
        [--mask-blur-px N] [--mask-offset-px N] [CASE ...]

The cases are built in memory.  PNGs, row by row (a disc on a horizontal gradient, PNG "Up" filter), so
even 8000x8000 compresses to a few hundred KB: `grey16` (16-bit grey), `grey8` (8-bit grey), `rgb` (8-bit
RGB), `rgba` (8-bit RGBA, a transparent border).  And the worst case for the output's size: `noise`, a
JPEG (quality 90) of random RGB pixels, whose PNG cutout is as large as its pixels.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import re
import resource
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types and bit depths per case.
_PNG_FORMATS = {"grey16": (0, 16, 1), "grey8": (0, 8, 1), "rgb": (2, 8, 3), "rgba": (6, 8, 4)}
CASES = (*_PNG_FORMATS, "noise")
NOISE_JPEG_QUALITY = 90
DEFAULT_SIDE_PX = 8000
_PNG_FILTER_UP = 2
WARM_UP_WH = (64, 48)
WARM_UP_RUNS = 3
MODEL = "u2netp"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _rows(case: str, width: int, height: int) -> Iterator[np.ndarray]:
    """The image one row at a time: a bright disc (the subject) on a dark horizontal gradient."""
    colour_type, depth, channels = _PNG_FORMATS[case]
    top = 65535 if depth == 16 else 255
    ramp = np.linspace(0.1 * top, 0.4 * top, width)
    x = np.arange(width) - width / 2
    radius = min(width, height) / 3
    for y in range(height):
        row = ramp.copy()
        inside = x**2 + (y - height / 2) ** 2 < radius**2
        row[inside] = 0.9 * top
        values = np.repeat(row[:, np.newaxis], channels, axis=1)
        if colour_type == 6:
            border = y < height // 20 or y >= height - height // 20
            values[:, 3] = 0 if border else top
        yield values.astype(">u2" if depth == 16 else np.uint8)


def case_file(case: str, side_px: int) -> bytes:
    """The file of one case, `side_px` square."""
    if case == "noise":
        return noise_jpeg(side_px, side_px)
    return synthetic_png(case, side_px, side_px)


def noise_jpeg(width: int, height: int) -> bytes:
    """Random RGB pixels as a JPEG: nothing for PNG to compress in the cutout."""
    from PIL import Image

    pixels = np.random.default_rng(3).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=NOISE_JPEG_QUALITY)
    return buffer.getvalue()


def synthetic_png(case: str, width: int = DEFAULT_SIDE_PX, height: int = DEFAULT_SIDE_PX) -> bytes:
    """A `case` PNG built row by row, never whole in memory ("Up" filter: unchanged rows are zeros)."""
    colour_type, depth, _ = _PNG_FORMATS[case]
    compressor = zlib.compressobj(9)
    parts: list[bytes] = []
    previous: np.ndarray | None = None
    for row in _rows(case, width, height):
        raw = row.reshape(-1).view(np.uint8)
        up = raw if previous is None else raw - previous  # uint8 wraps, as PNG's filter does
        parts.append(compressor.compress(bytes([_PNG_FILTER_UP]) + up.tobytes()))
        previous = raw
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def rss_bytes() -> int:
    """The current resident set of this process."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """The high-water mark of this process's resident set since exec (or since reset_peak_rss)."""
    match = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    assert match, "no VmHWM in /proc/self/status"
    return int(match.group(1)) * 1024


def measure_in_this_process(
    data: bytes, model_dir: str, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Load u2netp, warm it up, then one `make_cutout` on `data` with `options` (ImageOptions fields):
    baseline, peak and timings in bytes/ms."""
    from cutout_fleet.catalog import load_catalog
    from cutout_fleet.config.settings import ImageLimits, Settings
    from cutout_fleet.options import ImageOptions
    from cutout_fleet.worker.pipeline import Timings, make_cutout
    from cutout_fleet.worker.sessions import SessionPool

    settings = Settings(model_dir=Path(model_dir))
    settings = settings.model_copy(update={"worker": settings.worker.model_copy(update={"models": [MODEL]})})
    session = SessionPool(settings, load_catalog(settings)).get(MODEL)
    # No budget here: the bench measures what an image needs, the budget is set from it.
    limits = ImageLimits(max_image_memory_mib=1 << 20)
    warm_up = synthetic_png("rgb", *WARM_UP_WH)
    for _ in range(WARM_UP_RUNS):
        make_cutout(warm_up, session, ImageOptions(model=MODEL), limits, Timings())
    image_options = ImageOptions(model=MODEL, **(options or {}))
    baseline = rss_bytes()
    baseline_peak = peak_rss_bytes()
    timings = Timings()
    started = time.perf_counter()
    cutout = make_cutout(data, session, image_options, limits, timings, name="memory-bench")
    elapsed_s = time.perf_counter() - started
    # ru_maxrss is in KiB on Linux; VmHWM is the same mark, read from /proc.
    ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "baseline_rss_bytes": baseline,
        "baseline_peak_bytes": baseline_peak,
        "peak_rss_bytes": peak_rss_bytes(),
        "ru_maxrss_bytes": ru_maxrss,
        "output_bytes": len(cutout.data),
        "size_wh": [cutout.width, cutout.height],
        "elapsed_s": round(elapsed_s, 2),
        "timings_ms": timings.ms,
    }


def measure(case: str, side_px: int, model_dir: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """One case in a fresh interpreter: the child's memory starts from nothing."""
    data = case_file(case, side_px)
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        figures: dict[str, Any] = pool.apply(measure_in_this_process, (data, model_dir, options))
    megapixels = side_px * side_px / 1e6
    increase = figures["peak_rss_bytes"] - figures["baseline_rss_bytes"]
    return {
        "case": case,
        "side_px": side_px,
        "options": options or {},
        "file_bytes": len(data),
        **figures,
        "increase_bytes": increase,
        "increase_mib_per_mpx": round(increase / 2**20 / megapixels, 2),
    }


def _mib(value: int) -> str:
    return f"{value / 2**20:,.0f} MiB"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("cases", nargs="*", metavar="CASE", help=f"any of {', '.join(CASES)} (all)")
    parser.add_argument("--side", type=int, default=DEFAULT_SIDE_PX, help="square side in px (8000)")
    parser.add_argument("--format", choices=["png", "webp", "jpeg"], default=None, help="output format (png)")
    parser.add_argument("--preset", default=None, help="a catalog preset's options (cutout presets)")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an ImageOptions field (repeatable)",
    )
    parser.add_argument("--mask-blur-px", type=int, default=0)
    parser.add_argument("--mask-offset-px", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON object per case")
    args = parser.parse_args(argv)
    model_dir = os.environ.get("CUTOUT_MODEL_DIR")
    if not model_dir:
        parser.error("set CUTOUT_MODEL_DIR to a folder holding u2netp.onnx")
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    from cutout_fleet.presets import load_presets

    options: dict[str, object] = load_presets().expand(args.preset) if args.preset else {}
    options |= {"mask_blur_px": args.mask_blur_px, "mask_offset_px": args.mask_offset_px}
    if args.format:
        options["format"] = args.format
    options |= dict(option.split("=", 1) for option in args.option)
    output = f"{options.get('format', 'png')}" + (
        f" ({args.preset or ''} {' '.join(args.option)})".replace("( ", "(")
        if args.preset or args.option
        else ""
    )
    for case in args.cases or CASES:
        result = measure(case, args.side, model_dir, options)
        if args.json:
            print(json.dumps(result), flush=True)
            continue
        print(
            f"{case:7} {args.side}x{args.side} ({result['file_bytes'] / 1024:,.0f} KB) -> {output}: "
            f"baseline {_mib(result['baseline_rss_bytes'])}, peak {_mib(result['peak_rss_bytes'])} "
            f"(ru_maxrss {_mib(result['ru_maxrss_bytes'])}), increase {_mib(result['increase_bytes'])} = "
            f"{result['increase_mib_per_mpx']} MiB/Mpx; {result['elapsed_s']} s {result['timings_ms']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
