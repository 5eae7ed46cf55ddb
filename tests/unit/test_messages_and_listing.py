"""Task messages are validated JSON; listings are sorted into images and ignored keys."""

from __future__ import annotations

import pytest

from cutout_fleet.messages import MAX_ITEMS_PER_TASK, InvalidMessage, TaskMessage, parse_message
from cutout_fleet.options import ImageOptions
from cutout_fleet.producer.listing import iter_listing_chunks
from cutout_fleet.storage import LocalStorage, parse_location


def _payload(**changes: object) -> dict:
    message = TaskMessage(
        job_id="j1", source="s3://in/p/", out="s3://out/o", options=ImageOptions(), keys=["p/a.jpg"]
    )
    return {**message.model_dump(mode="json"), **changes}


def test_a_well_formed_payload_parses() -> None:
    message = parse_message(_payload())
    assert message.keys == ["p/a.jpg"] and message.options.model == "u2netp"


@pytest.mark.parametrize(
    "changes",
    [
        {"v": 0},
        {"v": "2"},
        {"job_id": "../../etc"},
        {"keys": []},
        {"keys": ["k"] * (MAX_ITEMS_PER_TASK + 1)},
        {"options": {"sensitivity": 7}},
        {"options": {"model": 7}},
    ],
)
def test_a_malformed_payload_is_refused(changes: dict) -> None:
    with pytest.raises(InvalidMessage):
        parse_message(_payload(**changes))


def test_an_oversized_payload_is_refused_before_validation() -> None:
    with pytest.raises(InvalidMessage, match="over"):
        parse_message(_payload(keys=["k" * 1000] * 600))


def test_a_payload_that_is_not_json_data_is_refused() -> None:
    with pytest.raises(InvalidMessage):
        parse_message({"job_id": object()})


def test_the_listing_keeps_images_and_counts_the_rest(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for name in ["a.JPG", "b.png", "c.txt", "d", "e.tiff", "out/x.png", "out/_reports/j.jsonl"]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    storage = LocalStorage(parse_location(str(tmp_path)))
    chunks = list(iter_listing_chunks(storage, "", exclude_prefix="out/", chunk_size=2))
    assert [[item.key for item in c.images] for c in chunks] == [["a.JPG", "b.png"], ["e.tiff"]]
    assert sum(c.ignored for c in chunks) == 4
