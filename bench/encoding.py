"""Bytes and milliseconds per cutout for each PNG and WebP encoder setting, on real cutouts.

For each sample photo (examples/photos, plus each one upscaled to `--side` px on the longer side, the
size of a phone photo) the real u2netp gives the mask and `apply_background` the transparent RGBA cutout
the worker writes.  Each setting encodes every cutout `--repeats` times; the table gives, per setting,
the median encode time and the total bytes over all cutouts, each with its ratio to the current default
(PNG level 6, zlib's default strategy) measured in the same run.

    CUTOUT_MODEL_DIR=/path/to/models python -m bench.encoding [--side 3000] [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from pathlib import Path
from typing import Any

from PIL import Image

from cutout_fleet.catalog import load_catalog
from cutout_fleet.config.settings import load_settings
from cutout_fleet.worker.imaging.composite import apply_background
from cutout_fleet.worker.imaging.mask import alpha_at_size
from cutout_fleet.worker.sessions import SessionPool

PHOTOS = Path(__file__).resolve().parents[1] / "examples" / "photos"
Z_FILTERED, Z_HUFFMAN_ONLY, Z_RLE = 1, 2, 3  # zlib strategies, as Pillow's PNG writer takes them
BASELINE = "png level 6"
SETTINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "png level 1": ("PNG", {"compress_level": 1}),
    "png level 3": ("PNG", {"compress_level": 3}),
    BASELINE: ("PNG", {"compress_level": 6}),
    "png level 9": ("PNG", {"compress_level": 9}),
    "png level 6 rle": ("PNG", {"compress_level": 6, "compress_type": Z_RLE}),
    "png level 1 rle": ("PNG", {"compress_level": 1, "compress_type": Z_RLE}),
    "png level 9 rle": ("PNG", {"compress_level": 9, "compress_type": Z_RLE}),
    "png level 6 filtered": ("PNG", {"compress_level": 6, "compress_type": Z_FILTERED}),
    "png level 3 filtered": ("PNG", {"compress_level": 3, "compress_type": Z_FILTERED}),
    "webp q90 method 4": ("WEBP", {"quality": 90, "method": 4, "exact": True}),
    "webp q90 method 2": ("WEBP", {"quality": 90, "method": 2, "exact": True}),
    "webp q90 method 0": ("WEBP", {"quality": 90, "method": 0, "exact": True}),
    "webp lossless method 0": ("WEBP", {"lossless": True, "method": 0, "exact": True}),
    "webp lossless method 4": ("WEBP", {"lossless": True, "method": 4, "exact": True}),
}


def _cutouts(side: int) -> list[Image.Image]:
    settings = load_settings()
    session = SessionPool(settings, load_catalog(settings)).get("u2netp")
    cutouts = []
    for path in sorted(PHOTOS.glob("*.[jp][pn]g")):
        photo = Image.open(path).convert("RGB")
        scale = side / max(photo.size)
        large = photo.resize(
            (round(photo.width * scale), round(photo.height * scale)), Image.Resampling.BICUBIC
        )
        for image in (photo, large):
            alpha = alpha_at_size(session.predict(image), image.size)
            cutouts.append(apply_background(image, alpha, None))
    return cutouts


def _encode(image: Image.Image, fmt: str, options: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    cutouts = _cutouts(args.side)
    results: dict[str, dict[str, float]] = {}
    for name, (fmt, options) in SETTINGS.items():
        per_image_ms, total_bytes = [], 0
        for image in cutouts:
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                data = _encode(image, fmt, options)
                times.append((time.perf_counter() - start) * 1000)
            per_image_ms.append(statistics.median(times))
            total_bytes += len(data)
        results[name] = {"median_ms": statistics.median(per_image_ms), "total_kib": total_bytes / 1024}
    base = results[BASELINE]
    for values in results.values():
        values["ms_ratio"] = round(values["median_ms"] / base["median_ms"], 2)
        values["bytes_ratio"] = round(values["total_kib"] / base["total_kib"], 2)
        values["median_ms"], values["total_kib"] = round(values["median_ms"], 1), round(values["total_kib"])
    pixels = sum(image.width * image.height for image in cutouts) / 1e6
    if args.json:
        print(
            json.dumps(
                {"cutouts": len(cutouts), "megapixels": round(pixels, 1), "settings": results}, indent=2
            )
        )
        return
    print(
        f"{len(cutouts)} cutouts ({pixels:.1f} Mpx in all); median ms per cutout, total KiB; "
        f"ratios to {BASELINE}"
    )
    for name, values in results.items():
        print(
            f"  {name:<24} {values['median_ms']:>8.1f} ms (x{values['ms_ratio']:.2f})"
            f"  {values['total_kib']:>8.0f} KiB (x{values['bytes_ratio']:.2f})"
        )


if __name__ == "__main__":
    main()
