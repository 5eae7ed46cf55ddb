"""What the catalog steps cost per image, against the plain cutout measured in the same run.

For each sample photo, upscaled so its longer side is `--side` px (default 4000: a phone photo), the
model's mask is made once with the real u2netp; then each case runs `finish` (box, frame, shadow,
background) and the encoders, `--repeats` times, and the medians are printed in ms with their ratio to
`plain` (the cutout as it was before catalog outputs: transparent PNG).  `subject_box` alone is timed on
the same masks, since it is the one full-size scan the crop adds.

    CUTOUT_MODEL_DIR=/path/to/models python -m bench.catalog_outputs [--side 4000] [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from cutout_fleet.catalog import load_catalog
from cutout_fleet.config.settings import load_settings
from cutout_fleet.options import make_options
from cutout_fleet.presets import load_presets
from cutout_fleet.worker.image_plan import finish_spec
from cutout_fleet.worker.imaging.encode import encode_image, encode_mask
from cutout_fleet.worker.imaging.finish import finish
from cutout_fleet.worker.imaging.mask import alpha_at_size
from cutout_fleet.worker.imaging.subject_box import subject_box
from cutout_fleet.worker.sessions import SessionPool

PHOTOS = Path(__file__).resolve().parents[1] / "examples" / "photos"
CASES = {
    "plain": {},
    "crop": {"crop": "subject", "margin": "5%"},
    "marketplace-main": "marketplace-main",
    "shop-tile": "shop-tile",
    "transparent-square": "transparent-square",
    "mask-only": "mask-only",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    settings = load_settings()
    predictor = SessionPool(settings, load_catalog(settings)).get("u2netp")
    photos = [_upscaled(path, args.side) for path in sorted(PHOTOS.glob("*.[jp][pn]g"))]
    masks = [alpha_at_size(predictor.predict(photo), photo.size) for photo in photos]
    presets = load_presets()

    results: dict[str, dict[str, float]] = {}
    for case, definition in CASES.items():
        values = presets.expand(definition) if isinstance(definition, str) else definition
        options = make_options(**values)
        spec = finish_spec(options)
        times = [
            _median_ms(lambda p=photo, m=mask, s=spec, o=options: _one(p, m, s, o), args.repeats)
            for photo, mask in zip(photos, masks, strict=True)
        ]
        results[case] = {"median_ms": statistics.median(times)}
    box_ms = [_median_ms(lambda m=mask: subject_box(m), args.repeats) for mask in masks]
    results["subject_box alone"] = {"median_ms": statistics.median(box_ms)}
    plain = results["plain"]["median_ms"]
    for values in results.values():
        values["ratio_to_plain"] = round(values["median_ms"] / plain, 2)
        values["median_ms"] = round(values["median_ms"], 1)
    if args.json:
        print(json.dumps({"side_px": args.side, "photos": len(photos), "cases": results}, indent=2))
        return
    print(
        f"{len(photos)} photos at {args.side} px on the longer side; median ms per image of finish + encode"
    )
    for case, values in results.items():
        print(f"  {case:<20} {values['median_ms']:>9.1f} ms   x{values['ratio_to_plain']:.2f} of plain")


def _one(photo: Image.Image, mask: np.ndarray, spec, options) -> None:  # type: ignore[no-untyped-def]
    finished = finish(photo, mask, spec)
    if finished.image is not None:
        quality = options.quality or 90
        encode_image(finished.image, options.format, webp_quality=quality, jpeg_quality=quality)
    if finished.mask is not None:
        encode_mask(finished.mask)


def _upscaled(path: Path, side: int) -> Image.Image:
    image = Image.open(path).convert("RGB")
    scale = side / max(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)


def _median_ms(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


if __name__ == "__main__":
    main()
