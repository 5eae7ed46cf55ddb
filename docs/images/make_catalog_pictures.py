"""Make the README's before/after pictures of the catalog presets from the sample photos.

    CUTOUT_MODEL_DIR=... python docs/images/make_catalog_pictures.py

Runs `cutout run examples/photos` once per preset (the real u2netp, as a user would), then puts each
photo beside its output, transparent outputs on a checkerboard, into docs/images/catalog-PRESET.jpg.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "examples" / "photos"
HERE = Path(__file__).resolve().parent
PRESETS = ("marketplace-main", "shop-tile", "transparent-square")
SHOWN = ("coffee.png", "astronaut.png", "rocket.jpg")
TILE_PX = 320
GAP_PX = 12
CHECKER_PX = 16


def main() -> None:
    cutout = Path(sys.executable).parent / "cutout"
    with tempfile.TemporaryDirectory() as tmp:
        for preset in PRESETS:
            out = Path(tmp) / preset
            subprocess.run(
                [str(cutout), "run", str(PHOTOS), "--out", str(out), "--preset", preset],
                check=True,
                env={**os.environ, "CUTOUT_REDIS_URL": "redis://127.0.0.1:1/0"},
            )
            rows = [_row(PHOTOS / name, _output(out, name)) for name in SHOWN]
            _stack(rows).save(HERE / f"catalog-{preset}.jpg", quality=85, optimize=True)
            print(f"wrote docs/images/catalog-{preset}.jpg")


def _output(folder: Path, name: str) -> Path:
    stem = name.rsplit(".", 1)[0]
    return next(path for path in folder.iterdir() if path.stem == stem)


def _row(source: Path, output: Path) -> Image.Image:
    before = _fitted(Image.open(source).convert("RGB"))
    after = _fitted(_on_checkerboard(Image.open(output)))
    row = Image.new("RGB", (2 * TILE_PX + GAP_PX, TILE_PX), (255, 255, 255))
    row.paste(before, ((TILE_PX - before.width) // 2, (TILE_PX - before.height) // 2))
    row.paste(after, (TILE_PX + GAP_PX + (TILE_PX - after.width) // 2, (TILE_PX - after.height) // 2))
    ImageDraw.Draw(row).rectangle(
        (TILE_PX + GAP_PX, 0, 2 * TILE_PX + GAP_PX - 1, TILE_PX - 1), outline=(200, 200, 200)
    )
    return row


def _fitted(image: Image.Image) -> Image.Image:
    image.thumbnail((TILE_PX, TILE_PX), Image.Resampling.LANCZOS)
    return image


def _on_checkerboard(image: Image.Image) -> Image.Image:
    if image.mode != "RGBA":
        return image.convert("RGB")
    board = Image.new("RGB", image.size, (255, 255, 255))
    draw = ImageDraw.Draw(board)
    for y in range(0, image.height, CHECKER_PX):
        for x in range((y // CHECKER_PX) % 2 * CHECKER_PX, image.width, 2 * CHECKER_PX):
            draw.rectangle((x, y, x + CHECKER_PX - 1, y + CHECKER_PX - 1), fill=(220, 220, 220))
    board.paste(image, mask=image.getchannel("A"))
    return board


def _stack(rows: list[Image.Image]) -> Image.Image:
    sheet = Image.new("RGB", (rows[0].width, len(rows) * TILE_PX + (len(rows) - 1) * GAP_PX), (255, 255, 255))
    for index, row in enumerate(rows):
        sheet.paste(row, (0, index * (TILE_PX + GAP_PX)))
    return sheet


if __name__ == "__main__":
    main()
