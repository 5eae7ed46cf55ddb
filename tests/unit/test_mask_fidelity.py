"""Our u2netp masks match rembg's on the same model and photos (golden masks: tests/data/golden/README.md).

rembg feeds a photo's stored pixel values to the model; our decoder first converts photos with an embedded ICC
profile to sRGB (rocket.jpg is Adobe RGB (1998): IoU 0.987 against rembg from its original bytes, 0.9994
against rembg given the same sRGB-converted pixels).  That is colour management, not model preprocessing, so
the pipeline test below feeds both sides the same pixels: the photo re-encoded as a PNG without its profile.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutout_fleet.config.settings import ImageLimits
from cutout_fleet.options import ImageOptions
from cutout_fleet.worker.imaging.mask import to_uint8
from cutout_fleet.worker.imaging.prep import mask_to_size
from cutout_fleet.worker.models.runner import ModelSession
from cutout_fleet.worker.pipeline import Timings, make_cutout
from tests.support.paths import golden_masks_dir, sample_images
from tests.support.tiny_models import builtin_spec

MODEL = "u2netp"
BINARY_THRESHOLD = 128
MIN_IOU = 0.99
# rembg truncates its 320² mask to uint8 before resizing, we resize the float mask and round: a level or
# two at edges, well under one level on average (measured 0.03-0.6).  More means a preprocessing drift.
MAX_MEAN_ABS_DIFF = 1.5

PHOTOS = sample_images()


@pytest.fixture(scope="module")
def u2netp(real_model_dir: Path) -> ModelSession:
    return ModelSession(builtin_spec(MODEL), real_model_dir, providers=["CPUExecutionProvider"])


def golden_mask(photo: Path) -> np.ndarray:
    path = golden_masks_dir(MODEL) / f"{photo.stem}.png"
    golden = Image.open(path)
    assert golden.mode == "L", f"{path} should be 8-bit grayscale"
    return np.asarray(golden)


def assert_matches_golden(alpha: np.ndarray, photo: Path) -> None:
    golden = golden_mask(photo)
    assert alpha.shape == golden.shape, f"{photo.name}: mask {alpha.shape}, golden {golden.shape}"
    ours, theirs = alpha >= BINARY_THRESHOLD, golden >= BINARY_THRESHOLD
    iou = (ours & theirs).sum() / max((ours | theirs).sum(), 1)
    mad = np.abs(alpha.astype(np.int16) - golden.astype(np.int16)).mean()
    summary = f"{photo.name}: IoU {iou:.5f} (need >= {MIN_IOU}), mean |diff| {mad:.3f} levels"
    assert iou >= MIN_IOU, summary
    assert mad <= MAX_MEAN_ABS_DIFF, summary


@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.stem)
def test_model_mask_matches_rembg(u2netp: ModelSession, photo: Path) -> None:
    image = Image.open(photo).convert("RGB")

    mask = mask_to_size(u2netp.predict(image), image.size)

    assert_matches_golden(to_uint8(mask), photo)


def without_colour_profile(photo: Path) -> bytes:
    """The photo's stored pixel values as a lossless PNG with no ICC profile: what rembg's model saw."""
    pixels = Image.open(photo).convert("RGB")
    pixels.info = {}  # Pillow's PNG writer would otherwise carry the source's ICC profile over
    buffer = io.BytesIO()
    pixels.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.stem)
def test_cutout_alpha_with_default_options_matches_rembg(u2netp: ModelSession, photo: Path) -> None:
    data = without_colour_profile(photo)

    cutout = make_cutout(data, u2netp, ImageOptions(), ImageLimits(), Timings(), name=photo.name)

    rgba = Image.open(io.BytesIO(cutout.data))

    assert rgba.mode == "RGBA"
    assert_matches_golden(np.asarray(rgba.getchannel("A")), photo)
