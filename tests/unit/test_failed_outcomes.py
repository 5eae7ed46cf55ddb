"""A failed item's outcome says that its output was not written; other outcomes say nothing of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from cutout_fleet.config.settings import ImageLimits
from cutout_fleet.items import ItemRef
from cutout_fleet.messages import TaskMessage
from cutout_fleet.options import make_options
from cutout_fleet.outcomes import Outcome
from cutout_fleet.storage import LocalStorage, parse_location
from cutout_fleet.worker.batch import failure
from cutout_fleet.worker.pipeline import ItemContext, MaskPredictor, process_item


class NoModel:
    def predict(self, image: Image.Image) -> object:
        raise AssertionError("a failed download must not reach the model")


def _context(tmp_path: Path) -> ItemContext:
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    out.mkdir()

    def predictor() -> MaskPredictor:
        return NoModel()  # type: ignore[return-value]

    return ItemContext(
        source=LocalStorage(parse_location(str(source))),
        out=LocalStorage(parse_location(str(out))),
        options=make_options(model="u2netp"),
        options_hash="o1-test",
        limits=ImageLimits(),
        predictor=predictor,
    )


def test_an_item_that_fails_in_the_worker_says_its_output_was_not_written(tmp_path: Path) -> None:
    # Given an item whose source is missing
    ctx = _context(tmp_path)

    # When the worker processes it
    outcome = process_item(ItemRef("", "gone.jpg"), "gone.png", ctx)

    # Then it failed, names its output key, and says that output was not written
    assert (outcome.status, outcome.error_code) == ("failed", "source_missing")
    assert json.loads(outcome.to_json())["output_written"] is False
    assert not (tmp_path / "out" / "gone.png").exists()


def test_a_batch_failure_says_its_output_was_not_written() -> None:
    # Given a message's item that the batch fails (a timeout, poison, a transient error past its retries)
    message = TaskMessage(
        job_id="j", source="s3://in/p/", out="s3://out/o", options=make_options(), keys=["p/a.jpg"]
    )

    # When its outcome is made
    outcome = failure(message, ItemRef("in", "p/a.jpg"), "o/a.png", "timeout", "p/a.jpg: took too long")

    # Then it says the output was not written
    assert outcome.output_written is False


@pytest.mark.parametrize("status", ["succeeded", "skipped"])
def test_other_outcomes_leave_the_field_out_of_their_line(status: str) -> None:
    # Given an outcome that did not fail
    outcome = Outcome("p/a.jpg", status, "o/a.png", "u2netp")  # type: ignore[arg-type]

    # When it is written as a report line
    # Then the line has no `output_written`, and old lines without it still read back
    assert "output_written" not in json.loads(outcome.to_json())
    assert Outcome.from_json(outcome.to_json()) == outcome
