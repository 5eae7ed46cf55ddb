"""Catalog-ready outputs through `cutout run` on the sample photos with the real u2netp: every built-in
preset's canvas, background at the corners and product fill; masks; no_subject; a preset operators add."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutout_fleet.presets import load_presets
from cutout_fleet.worker.imaging.subject_box import subject_box
from tests.support.fleet import EXAMPLES_DIR, SAMPLE_PHOTOS, run_cli

pytestmark = pytest.mark.integration

WHITE = (255, 255, 255)
# A JPEG's corner is white within its codec's noise.
JPEG_TOLERANCE = 3


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in SAMPLE_PHOTOS:
        (folder / name).write_bytes((EXAMPLES_DIR / name).read_bytes())
    return folder


@pytest.fixture
def env(real_model_dir: Path) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CUTOUT_")}
    environment["CUTOUT_MODEL_DIR"] = str(real_model_dir)
    environment["CUTOUT_REDIS_URL"] = "redis://127.0.0.1:1/0"  # embedded mode needs no Redis
    return environment


def _report(dest: Path, job: str) -> dict[str, dict[str, object]]:
    lines = (dest / "_reports" / f"{job}.jsonl").read_text().splitlines()
    return {record["key"]: record for record in map(json.loads, lines)}


def _fill(mask: np.ndarray) -> float:
    """The product's span of the canvas along its limiting side, measured on the written mask."""
    box = subject_box(mask)
    assert box is not None
    height, width = mask.shape
    return max((box[2] - box[0]) / width, (box[3] - box[1]) / height)


def test_the_marketplace_preset_makes_white_2000_px_jpeg_squares_at_85_percent_fill(
    tmp_path: Path, photos: Path, env: dict[str, str], cutout_bin: str
) -> None:
    dest = tmp_path / "out"
    # --output both: the mask beside each JPEG is how the test measures the product's fill.
    run_cli(cutout_bin, env, "run", str(photos), "--out", str(dest), "--preset", "marketplace-main",
            "--output", "both", "--job-id", "market")  # fmt: skip

    report = _report(dest, "market")
    for name in SAMPLE_PHOTOS:
        stem = name.rsplit(".", 1)[0]
        image = Image.open(dest / f"{stem}.jpg")
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (2000, 2000)
        pixels = np.asarray(image).astype(int)
        for corner in (pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]):
            assert np.abs(corner - WHITE).max() <= JPEG_TOLERANCE
        mask = np.asarray(Image.open(dest / f"{stem}.mask.png"))
        line = report[name]
        assert line["status"] == "succeeded" and line["mask_key"] == f"{stem}.mask.png"
        fill = line["fill_reached"]
        assert isinstance(fill, float) and fill <= 0.85 + 1e-6
        assert abs(_fill(mask) - fill) < 0.01  # the written image shows the fill the report claims
        if line["scale"] < 4:  # not held back by the 4x upscale cap: the fill is the preset's
            assert fill == pytest.approx(0.85, abs=1e-3)


def test_the_transparent_square_preset_makes_square_pngs_with_the_product_inside_its_margin(
    tmp_path: Path, photos: Path, env: dict[str, str], cutout_bin: str
) -> None:
    dest = tmp_path / "out"
    run_cli(cutout_bin, env, "run", str(photos), "--out", str(dest), "--preset", "transparent-square")

    for name in SAMPLE_PHOTOS:
        image = Image.open(dest / (name.rsplit(".", 1)[0] + ".png"))
        assert image.mode == "RGBA" and image.size[0] == image.size[1]
        alpha = np.asarray(image.getchannel("A"))
        assert alpha[0, 0] == alpha[-1, -1] == 0  # transparent corners
        box = subject_box(alpha)
        assert box is not None
        side = image.size[0]
        # 5% of the product's longer side on each side, so it spans 1/1.1 of the square.
        assert max(box[2] - box[0], box[3] - box[1]) / side == pytest.approx(1 / 1.1, abs=0.01)


def test_the_shop_tile_preset_stands_the_product_on_the_bottom_margin_with_a_shadow(
    tmp_path: Path, photos: Path, env: dict[str, str], cutout_bin: str
) -> None:
    dest = tmp_path / "out"
    run_cli(cutout_bin, env, "run", str(photos), "--out", str(dest), "--preset", "shop-tile",
            "--output", "both", "--job-id", "tile")  # fmt: skip

    preset = load_presets().get("shop-tile").options
    margin_px = round(float(str(preset["margin"]).rstrip("%")) / 100 * 1200)
    report = _report(dest, "tile")
    for name in SAMPLE_PHOTOS:
        stem = name.rsplit(".", 1)[0]
        image = Image.open(dest / f"{stem}.jpg")
        assert image.size == (1200, 1200)
        assert np.abs(np.asarray(image)[0, 0].astype(int) - WHITE).max() <= JPEG_TOLERANCE
        mask = np.asarray(Image.open(dest / f"{stem}.mask.png"))
        box = subject_box(mask)
        assert box is not None
        assert abs(box[3] - (1200 - margin_px)) <= 2  # stands on the bottom margin
        below = np.asarray(image.convert("L"))[box[3] : box[3] + 5, box[0] : box[2]]
        assert below.mean() < 254  # the shadow darkens the white under the product
        fill = report[name]["fill_reached"]
        assert fill == pytest.approx(preset["fill"], abs=1e-3) or report[name]["scale"] == 4.0
        assert abs(_fill(mask) - fill) < 0.01


def test_the_mask_only_preset_writes_grayscale_masks_at_the_photos_size(
    tmp_path: Path, photos: Path, env: dict[str, str], cutout_bin: str
) -> None:
    dest = tmp_path / "out"
    run_cli(cutout_bin, env, "run", str(photos), "--out", str(dest), "--preset", "mask-only", "--job-id", "m")

    for name in SAMPLE_PHOTOS:
        stem = name.rsplit(".", 1)[0]
        mask = Image.open(dest / f"{stem}.mask.png")
        assert mask.mode == "L" and mask.size == Image.open(photos / name).size
        assert not (dest / f"{stem}.png").exists()
    assert {line["output_key"] for line in _report(dest, "m").values()} == {
        name.rsplit(".", 1)[0] + ".mask.png" for name in SAMPLE_PHOTOS
    }


def test_jpeg_with_a_transparent_background_is_refused_before_any_work(
    tmp_path: Path, photos: Path, env: dict[str, str], cutout_bin: str
) -> None:
    result = run_cli(cutout_bin, env, "run", str(photos), "--out", str(tmp_path / "out"), "--format", "jpeg",
                     check=False)  # fmt: skip
    assert result.returncode == 2
    assert "--background white" in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_image_with_no_product_fails_as_no_subject_or_is_kept_uncropped(
    tmp_path: Path, env: dict[str, str], cutout_bin: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    # u2netp finds nothing in a blank white photo: no visible pixel but a speck.
    Image.new("RGB", (320, 240), WHITE).save(src / "blank.png")
    (src / "coffee.png").write_bytes((EXAMPLES_DIR / "coffee.png").read_bytes())
    common = ["run", str(src), "--crop", "subject", "--canvas", "square", "--background", "white"]

    failed = run_cli(cutout_bin, env, *common, "--out", str(tmp_path / "a"), "--job-id", "a", check=False)
    assert failed.returncode == 1
    line = _report(tmp_path / "a", "a")["blank.png"]
    assert line["status"] == "failed" and line["error_code"] == "no_subject"
    assert _report(tmp_path / "a", "a")["coffee.png"]["status"] == "succeeded"

    run_cli(
        cutout_bin, env, *common, "--on-no-subject", "keep", "--out", str(tmp_path / "b"), "--job-id", "b"
    )
    kept = _report(tmp_path / "b", "b")["blank.png"]
    assert kept["status"] == "succeeded" and kept["no_subject"] is True
    assert Image.open(tmp_path / "b" / "blank.png").size == (320, 320)  # the whole photo on its square


def test_a_preset_from_the_operators_file_is_used_by_name(
    tmp_path: Path, photos: Path, env: dict[str, str], cutout_bin: str
) -> None:
    presets = tmp_path / "presets.toml"
    presets.write_text(
        '[presets.thumb]\ndescription = "small webp thumbs"\ncrop = "subject"\ncanvas = "300x200"\n'
        'fill = 0.9\nbackground = "#102030"\nformat = "webp"\nquality = 80\n'
    )
    dest = tmp_path / "out"
    env = {**env, "CUTOUT_FRAMING__PRESETS_FILE": str(presets)}
    listed = run_cli(cutout_bin, env, "presets", "--json")
    assert json.loads(listed.stdout)["thumb"]["canvas"] == "300x200"

    run_cli(cutout_bin, env, "run", str(photos), "--out", str(dest), "--preset", "thumb")

    image = Image.open(dest / "coffee.webp")
    assert image.size == (300, 200)
    assert np.abs(np.asarray(image.convert("RGB"))[0, 0].astype(int) - (16, 32, 48)).max() <= 4
