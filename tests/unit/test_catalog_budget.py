"""The memory budget of an image whose job frames it: the source's share plus the canvas's."""

from __future__ import annotations

import pytest

from cutout_fleet.config.settings import ImageLimits
from cutout_fleet.errors import ImageTooLarge
from cutout_fleet.options import make_options
from cutout_fleet.worker.image_plan import image_budget
from cutout_fleet.worker.imaging.budget import (
    CANVAS_BYTES_PER_PIXEL,
    FRAMING_BYTES_PER_SOURCE_PIXEL,
    PIPELINE_BYTES_PER_PIXEL,
    MemoryBudget,
)

MPX_64 = (8000, 8000)


def test_a_job_that_does_not_frame_keeps_the_budget_it_had() -> None:
    budget = image_budget(make_options(), ImageLimits())
    assert budget.framed_px == 0
    assert budget.estimate_bytes(100, 100, has_alpha=False) == 100 * 100 * PIPELINE_BYTES_PER_PIXEL


def test_a_canvas_adds_the_sources_share_and_the_canvas_pixels() -> None:
    budget = image_budget(make_options(canvas="1000x500", background="white", format="jpeg"), ImageLimits())
    plain = MemoryBudget(budget.max_bytes, "jpeg").estimate_bytes(100, 100, has_alpha=False)
    added = 100 * 100 * FRAMING_BYTES_PER_SOURCE_PIXEL + 1000 * 500 * CANVAS_BYTES_PER_PIXEL
    assert budget.estimate_bytes(100, 100, has_alpha=False) == plain + added


def test_a_square_canvas_counts_its_cap() -> None:
    assert image_budget(make_options(canvas="square", max_square_px=1500), ImageLimits()).framed_px == 1500**2


@pytest.mark.parametrize(
    "options",
    [{"crop": "subject"}, {"crop": "subject", "canvas": "2000x2000", "fill": 0.85, "background": "white",
                           "format": "jpeg"}],
)  # fmt: skip
def test_the_largest_photo_the_default_limits_take_can_still_be_framed(options: dict[str, object]) -> None:
    budget = image_budget(make_options(**options), ImageLimits())
    budget.check(*MPX_64, has_alpha=False, name="a.jpg")  # does not raise


def test_a_huge_canvas_on_a_huge_photo_is_refused_before_decoding_naming_the_setting() -> None:
    budget = image_budget(make_options(canvas="10000x10000"), ImageLimits())
    with pytest.raises(ImageTooLarge, match=r"and its framed output.*CUTOUT_LIMITS__MAX_IMAGE_MEMORY_MIB"):
        budget.check(*MPX_64, has_alpha=False, name="a.jpg")
