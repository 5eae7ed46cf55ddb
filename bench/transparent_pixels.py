"""Colour under alpha 0, file size and encode time of real cutouts, before and after dropping that colour.

For each photo (rocket.jpg and astronaut.png by default, from examples/photos), the real u2netp gives the
alpha (default options).  "before" is the RGBA the pipeline used to write: the source's colours under every
pixel; "after" is `apply_background` + `encode_image` as they are now.  Per format it prints the size, the
median encode time over --repeats, and how many alpha-0 pixels decode with colour (for lossy WebP: in all,
and farther than 16 px in x and in y from every pixel with alpha above 0).

    CUTOUT_MODEL_DIR=/path/to/models python -m bench.transparent_pixels [--repeats N] [--json] [PHOTO ...]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cutout_fleet.catalog import load_catalog
from cutout_fleet.config.settings import Settings
from cutout_fleet.worker.imaging.composite import apply_background
from cutout_fleet.worker.imaging.encode import LOSSY_SMEAR_REACH_PX, encode_image, hidden_colour_beyond
from cutout_fleet.worker.imaging.mask import refine_mask
from cutout_fleet.worker.imaging.prep import mask_to_size
from cutout_fleet.worker.models.runner import ModelSession

PHOTOS_DIR = Path(__file__).resolve().parents[1] / "examples" / "photos"
DEFAULT_PHOTOS = ("rocket.jpg", "astronaut.png")
PNG_LEVEL = 6
WEBP_QUALITY = 90


def encoders() -> dict[str, Callable[[Image.Image, bool], bytes]]:
    """format -> encode(image, before): 'before' writes the image as the old encoder did."""

    def png(image: Image.Image, before: bool) -> bytes:
        if before:
            buffer = io.BytesIO()
            image.save(buffer, "PNG", compress_level=PNG_LEVEL)
            return buffer.getvalue()
        return encode_image(image, "png", png_compress_level=PNG_LEVEL)

    def webp(image: Image.Image, before: bool) -> bytes:
        if before:
            buffer = io.BytesIO()
            image.save(buffer, "WEBP", quality=WEBP_QUALITY, method=4)
            return buffer.getvalue()
        return encode_image(image, "webp", webp_quality=WEBP_QUALITY)

    def webp_lossless(image: Image.Image, before: bool) -> bytes:
        if before:
            buffer = io.BytesIO()
            image.save(buffer, "WEBP", lossless=True, method=4)
            return buffer.getvalue()
        return encode_image(image, "webp", webp_lossless=True)

    return {"png-6": png, "webp-q90": webp, "webp-lossless": webp_lossless}


def cutouts(session: ModelSession, photo: Path) -> tuple[Image.Image, Image.Image]:
    """(before, after): the source's colours under alpha 0, and the cutout as the pipeline makes it now."""
    with Image.open(photo) as opened:
        rgb = opened.convert("RGB")
    alpha = refine_mask(mask_to_size(session.predict(rgb), rgb.size))
    before = rgb.convert("RGBA")
    before.putalpha(Image.fromarray(alpha, mode="L"))
    return before, apply_background(rgb, alpha, None)


def measure(
    encoder: Callable[[Image.Image, bool], bytes], image: Image.Image, before: bool, repeats: int
) -> dict[str, Any]:
    times_ms = []
    for _ in range(repeats):
        start = time.perf_counter()
        data = encoder(image, before)
        times_ms.append((time.perf_counter() - start) * 1000.0)
    with Image.open(io.BytesIO(data)) as decoded:
        rgba = np.asarray(decoded.convert("RGBA"))
    transparent = rgba[..., 3] == 0
    return {
        "kib": round(len(data) / 1024, 1),
        "encode_ms": round(statistics.median(times_ms), 1),
        "alpha0_px": int(np.count_nonzero(transparent)),
        "alpha0_coloured_px": int(np.count_nonzero(transparent & rgba[..., :3].any(axis=-1))),
        "alpha0_coloured_beyond_16px": hidden_colour_beyond(rgba, LOSSY_SMEAR_REACH_PX),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("photos", nargs="*", default=list(DEFAULT_PHOTOS), help="names in examples/photos")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    settings = Settings()
    session = ModelSession(
        load_catalog(settings).get("u2netp"), settings.model_dir, providers=["CPUExecutionProvider"]
    )
    results: dict[str, Any] = {}
    for name in args.photos:
        before, after = cutouts(session, PHOTOS_DIR / name)
        for fmt, encoder in encoders().items():
            for label, image in (("before", before), ("after", after)):
                row = measure(encoder, image, label == "before", args.repeats)
                results[f"{name} {fmt} {label}"] = row
                if not args.json:
                    print(f"{name:14} {fmt:13} {label:6} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
