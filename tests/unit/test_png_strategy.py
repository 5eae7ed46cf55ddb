"""PNG outputs are written with zlib's RLE strategy by default: the same pixels, faster to encode."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cutout_fleet.config.settings import ImageLimits
from cutout_fleet.worker.imaging.encode import PNG_STRATEGIES, encode_image, encode_mask


def _cutout() -> Image.Image:
    rgba = np.zeros((120, 160, 4), dtype=np.uint8)
    yy, xx = np.mgrid[0:120, 0:160]
    inside = (yy - 60) ** 2 + (xx - 80) ** 2 < 40**2
    rgba[inside] = (200, 80, 40, 255)
    rgba[..., 0] = np.where(inside, xx, 0)  # a gradient on the product
    return Image.fromarray(rgba)


@pytest.mark.parametrize("strategy", sorted(PNG_STRATEGIES))
def test_every_strategy_writes_the_same_pixels(strategy: str) -> None:
    image = _cutout()
    decoded = Image.open(io.BytesIO(encode_image(image, "png", png_strategy=strategy)))  # type: ignore[arg-type]
    assert np.array_equal(np.asarray(decoded), np.asarray(image))


def test_rle_is_the_default_for_outputs_and_masks() -> None:
    assert ImageLimits().png_strategy == "rle"
    image = _cutout()
    assert encode_image(image, "png") == encode_image(image, "png", png_strategy="rle")
    mask = np.asarray(image.getchannel("A"))
    assert encode_mask(mask) == encode_mask(mask, png_strategy="rle")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_mask(mask)))), mask)


def test_the_strategy_changes_the_bytes() -> None:
    image = _cutout()
    assert encode_image(image, "png", png_strategy="rle") != encode_image(
        image, "png", png_strategy="default"
    )
