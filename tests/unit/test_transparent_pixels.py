"""Cutouts carry no pixel data where they are fully transparent, on real photos and the real u2netp.

Anyone who drops the alpha channel must not get the removed background back.  PNG and lossless WebP are
exact: every alpha-0 pixel decodes to (0, 0, 0, 0).  Lossy WebP smears colour (and near-black noise) a
macroblock into transparent areas, so there every alpha-0 pixel farther than 16 px, in x and in y, from any
pixel with alpha above 0 decodes to (0, 0, 0, 0).  Pixels with partial alpha keep their colour.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutout_fleet.config.settings import ImageLimits
from cutout_fleet.options import make_options
from cutout_fleet.worker.imaging import encode
from cutout_fleet.worker.imaging.composite import apply_background
from cutout_fleet.worker.imaging.encode import encode_image
from cutout_fleet.worker.imaging.mask import refine_mask
from cutout_fleet.worker.imaging.prep import mask_to_size
from cutout_fleet.worker.models.runner import ModelSession
from cutout_fleet.worker.pipeline import Timings, make_cutout
from tests.support.images import encode as encode_with_pillow
from tests.support.images import riff_chunk_types
from tests.support.paths import sample_images
from tests.support.tiny_models import builtin_spec

PHOTOS = sample_images()
LOSSY_REACH_PX = 16
MASKS = {"plain": {}, "blur-8": {"mask_blur_px": 8}, "grow-10": {"mask_offset_px": 10}}
MASKS["shrink-10"] = {"mask_offset_px": -10}
MASKS["blur-20-grow-5"] = {"mask_blur_px": 20, "mask_offset_px": 5}


class RememberingModel:
    """The real u2netp, asked once per distinct image: the tests below cut each photo many times."""

    def __init__(self, session: ModelSession) -> None:
        self.session = session
        self.masks: dict[bytes, np.ndarray] = {}

    def predict(self, image: Image.Image) -> np.ndarray:
        key = image.tobytes()
        if key not in self.masks:
            self.masks[key] = self.session.predict(image)
        return self.masks[key]


@pytest.fixture(scope="module")
def u2netp(real_model_dir: Path) -> RememberingModel:
    return RememberingModel(
        ModelSession(builtin_spec("u2netp"), real_model_dir, providers=["CPUExecutionProvider"])
    )


def photo_rgb(photo: Path) -> Image.Image:
    with Image.open(photo) as opened:
        return opened.convert("RGB")


def cutout_image(model: RememberingModel, photo: Path, mask: str) -> Image.Image:
    """The pipeline's stages up to the encoder: model, refined mask, transparent background."""
    rgb = photo_rgb(photo)
    alpha = refine_mask(mask_to_size(model.predict(rgb), rgb.size), **MASKS[mask])  # type: ignore[arg-type]
    assert 0 < np.count_nonzero(alpha == 0) < alpha.size, (
        f"{photo.name}: the cutout must be partly transparent"
    )
    return apply_background(rgb, alpha, None)


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGBA"))


def within_px(visible: np.ndarray, reach_px: int) -> np.ndarray:
    """True where a visible pixel lies within reach_px in x and in y (a box sum over an integral image)."""
    height, width = visible.shape
    integral = np.zeros((height + 1, width + 1), dtype=np.int64)
    integral[1:, 1:] = visible.astype(np.int64).cumsum(0).cumsum(1)
    top = np.clip(np.arange(height) - reach_px, 0, height)[:, None]
    bottom = np.clip(np.arange(height) + reach_px + 1, 0, height)[:, None]
    left = np.clip(np.arange(width) - reach_px, 0, width)[None, :]
    right = np.clip(np.arange(width) + reach_px + 1, 0, width)[None, :]
    boxed = integral[bottom, right] - integral[top, right] - integral[bottom, left] + integral[top, left]
    return boxed > 0


def coloured_transparent_pixels(rgba: np.ndarray, *, beyond_px: int | None = None) -> int:
    """Alpha-0 pixels whose RGB is not 0; with beyond_px, only those that far from every visible pixel."""
    hidden = (rgba[..., 3] == 0) & rgba[..., :3].any(axis=-1)
    if beyond_px is not None:
        hidden &= ~within_px(rgba[..., 3] > 0, beyond_px)
    return int(np.count_nonzero(hidden))


def test_the_source_photos_hold_colour_where_the_cutout_is_transparent(u2netp: RememberingModel) -> None:
    # Given every sample photo and the alpha the model gives it
    # Then most of what the cutout removes has colour in the source: the tests below have something to hide
    for photo in PHOTOS:
        alpha = np.asarray(cutout_image(u2netp, photo, "plain").getchannel("A"))
        source = np.asarray(photo_rgb(photo))
        assert source[alpha == 0].any(axis=-1).mean() > 0.9, f"{photo.name}: nothing to hide, a weak test"


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.stem)
def test_a_png_cutout_is_black_wherever_it_is_fully_transparent(
    u2netp: RememberingModel, photo: Path, mask: str
) -> None:
    # Given a real photo cut out by the real model, with this mask refinement
    # When the pipeline writes it as PNG
    cutout = make_cutout(
        photo.read_bytes(), u2netp, make_options(format="png", **MASKS[mask]), ImageLimits(), Timings()
    )

    # Then no alpha-0 pixel of the file holds colour
    assert coloured_transparent_pixels(decoded(cutout.data)) == 0


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.stem)
def test_a_lossless_webp_cutout_is_black_wherever_it_is_fully_transparent(
    u2netp: RememberingModel, photo: Path, mask: str
) -> None:
    # Given a real cutout (libwebp's lossless mode rewrites alpha-0 pixels unless told to keep them exact)
    image = cutout_image(u2netp, photo, mask)

    # When it is written as lossless WebP
    data = encode_image(image, "webp", webp_lossless=True)

    # Then it is lossless, and no alpha-0 pixel of the file holds colour
    assert b"VP8L" in riff_chunk_types(data)
    assert coloured_transparent_pixels(decoded(data)) == 0


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.stem)
def test_a_lossy_webp_cutout_is_black_beyond_16_px_of_the_subject(
    u2netp: RememberingModel, photo: Path, mask: str
) -> None:
    # Given a real photo cut out by the real model, with this mask refinement
    # When the pipeline writes it as WebP at the default quality
    cutout = make_cutout(
        photo.read_bytes(), u2netp, make_options(format="webp", **MASKS[mask]), ImageLimits(), Timings()
    )

    # Then it is still lossy, and no alpha-0 pixel farther than 16 px from the subject holds colour
    assert b"VP8 " in riff_chunk_types(cutout.data)
    assert coloured_transparent_pixels(decoded(cutout.data), beyond_px=LOSSY_REACH_PX) == 0


@pytest.mark.parametrize("quality", [1, 20, 50, 75])
@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.stem)
def test_a_lossy_webp_cutout_at_a_low_quality_is_black_beyond_16_px_of_the_subject(
    u2netp: RememberingModel, photo: Path, quality: int
) -> None:
    # Given a real cutout, and a quality at which libwebp leaves near-black noise far into transparent areas
    image = cutout_image(u2netp, photo, "plain")

    # When it is written as lossy WebP at that quality
    data = encode_image(image, "webp", webp_quality=quality)

    # Then no alpha-0 pixel farther than 16 px from the subject holds colour
    assert coloured_transparent_pixels(decoded(data), beyond_px=LOSSY_REACH_PX) == 0


def test_lossy_webp_falls_back_to_lossless_when_no_lossy_quality_keeps_transparency_clean(
    u2netp: RememberingModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a cutout and lossy qualities that both leave noise far from the subject (quality 1, measured)
    image = cutout_image(u2netp, PHOTOS[0], "plain")
    monkeypatch.setattr(encode, "WEBP_FALLBACK_QUALITY", 1)
    assert coloured_transparent_pixels(decoded(encode_with_pillow(image, "WEBP", quality=1, exact=True))) > 0

    # When it is written as lossy WebP at quality 1
    data = encode_image(image, "webp", webp_quality=1)

    # Then the file is lossless, with no colour in any alpha-0 pixel
    assert b"VP8L" in riff_chunk_types(data)
    assert coloured_transparent_pixels(decoded(data)) == 0


@pytest.mark.parametrize(("fmt", "lossless"), [("png", False), ("webp", True)], ids=["png", "webp-lossless"])
@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.stem)
def test_a_lossless_cutout_keeps_the_exact_colour_wherever_alpha_is_above_0(
    u2netp: RememberingModel, photo: Path, fmt: str, lossless: bool
) -> None:
    # Given a real cutout softened by a blur, so that it has a wide band of partial alpha
    image = cutout_image(u2netp, photo, "blur-8")
    visible = np.asarray(image.getchannel("A")) > 0

    # When it is written losslessly
    rgba = decoded(encode_image(image, fmt, webp_lossless=lossless))  # type: ignore[arg-type]

    # Then every pixel with alpha above 0 keeps the photo's colour and its alpha
    np.testing.assert_array_equal(rgba[visible], np.asarray(image)[visible])
