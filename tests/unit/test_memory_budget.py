"""The memory budget per image: estimated from the header, refused as image_too_large before decoding.

The figures (bytes per pixel) come from bench/memory_peak.py; tests/integration/test_memory.py checks
them against the real peak of a child process.
"""

from __future__ import annotations

import pytest
from PIL import Image

from cutout_fleet.config.settings import ImageLimits, Settings
from cutout_fleet.errors import ImageTooLarge
from cutout_fleet.options import make_options
from cutout_fleet.worker.imaging.budget import (
    LOSSY_WEBP_EXTRA_BYTES_PER_PIXEL,
    MIB,
    PIPELINE_BYTES_PER_PIXEL,
    SOURCE_ALPHA_BYTES_PER_PIXEL,
    MemoryBudget,
)
from cutout_fleet.worker.pipeline import Timings, make_cutout
from tests.support.images import encode, gradient_rgb

KEY = "catalog/huge.png"


class NeverCalled:
    def predict(self, image: Image.Image) -> object:
        raise AssertionError("the model ran on an image over the budget")


@pytest.mark.parametrize("has_alpha", [False, True], ids=["opaque", "with-alpha"])
def test_the_default_budget_fits_the_default_pixel_limit_with_png_output(has_alpha: bool) -> None:
    limits = ImageLimits()
    budget = MemoryBudget(limits.max_image_memory_mib * MIB, "png")

    side = int(limits.max_pixels**0.5)
    assert budget.estimate_bytes(side, side, has_alpha=has_alpha) <= budget.max_bytes


def test_the_estimate_is_pixels_times_bytes_per_pixel_of_the_working_set() -> None:
    png, webp = MemoryBudget(MIB, "png"), MemoryBudget(MIB, "webp")

    assert png.estimate_bytes(100, 50, has_alpha=False) == 5000 * PIPELINE_BYTES_PER_PIXEL
    assert png.estimate_bytes(100, 50, has_alpha=True) == 5000 * (
        PIPELINE_BYTES_PER_PIXEL + SOURCE_ALPHA_BYTES_PER_PIXEL
    )
    assert webp.estimate_bytes(100, 50, has_alpha=False) == 5000 * (
        PIPELINE_BYTES_PER_PIXEL + LOSSY_WEBP_EXTRA_BYTES_PER_PIXEL
    )


def test_an_image_over_the_budget_fails_the_item_before_the_model_runs() -> None:
    # Given a budget of 1 MiB and a 400x400 photo (400 * 400 * 11 bytes is about 1.7 MiB)
    limits = ImageLimits(max_image_memory_mib=1)
    data = encode(gradient_rgb((400, 400)), "PNG")

    with pytest.raises(ImageTooLarge) as caught:
        make_cutout(data, NeverCalled(), make_options(), limits, Timings(), name=KEY)  # type: ignore[arg-type]

    message = str(caught.value)
    assert caught.value.code == "image_too_large"
    assert KEY in message and "400x400" in message
    assert "2 MiB" in message and "1 MiB" in message  # the estimate, rounded, and the budget
    assert "CUTOUT_LIMITS__MAX_IMAGE_MEMORY_MIB" in message


def test_webp_output_needs_a_larger_budget_than_png_for_the_same_image() -> None:
    # Given a budget that fits a 300x300 photo written as PNG but not as WebP
    limits = ImageLimits(max_image_memory_mib=2)
    data = encode(gradient_rgb((300, 300)), "PNG")

    with pytest.raises(ImageTooLarge, match="WEBP"):
        make_cutout(data, NeverCalled(), make_options(format="webp"), limits, Timings(), name=KEY)  # type: ignore[arg-type]


def test_the_budget_is_read_from_cutout_limits_max_image_memory_mib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUTOUT_LIMITS__MAX_IMAGE_MEMORY_MIB", "2048")

    assert Settings().limits.max_image_memory_mib == 2048
