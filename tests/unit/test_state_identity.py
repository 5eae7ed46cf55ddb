"""How the producer and the outcomes name an item: the id that claims, outcomes and attempts share."""

from __future__ import annotations

from cutout_fleet.options import ImageOptions
from cutout_fleet.outcomes import Outcome
from cutout_fleet.producer.enqueue import EnqueueRequest, item_ref
from cutout_fleet.producer.listing import SourceItem
from cutout_fleet.storage import parse_location


def _request(source: str, mapping: str = "relative") -> EnqueueRequest:
    return EnqueueRequest(
        source=parse_location(source),
        out=parse_location("s3://out/o"),
        options=ImageOptions(model="u2netp"),
        queue_for=lambda _model: "cpu",
        items_per_task=16,
        mapping=mapping,  # type: ignore[arg-type]
    )


def test_a_listed_item_is_named_by_the_bucket_of_the_listed_prefix() -> None:
    # Given a prefix job on S3
    request = _request("s3://catalog/p/")

    # When a listed key is named
    ref = item_ref(request, SourceItem("p/a.png"))

    # Then its id carries the listed bucket
    assert ref.id == "catalog/p/a.png"


def test_an_item_of_a_local_folder_is_named_by_its_bare_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Given a job over a local folder
    request = _request(str(tmp_path))

    # When a key is named
    ref = item_ref(request, SourceItem("p/a.png"))

    # Then its id is the key alone
    assert ref.id == "p/a.png"


def test_a_manifest_item_is_named_by_its_own_bucket_and_pinned_version() -> None:
    # Given a manifest job (its source is the manifest's location)
    request = _request("s3://manifests/list.csv", mapping="bucket")

    # When a line naming another bucket and a version is named
    ref = item_ref(request, SourceItem("p/a.png", bucket="spring", version="v1"))

    # Then its id carries that bucket and version
    assert ref.id == "spring/p/a.png?versionId=v1"


def test_an_outcome_is_named_like_the_item_it_belongs_to() -> None:
    # Given outcomes of one key: in a bucket, pinned to a version, and from a local folder
    in_bucket = Outcome("p/a.png", "succeeded", "o/a.png", "u2netp", bucket="spring")
    pinned = Outcome("p/a.png", "succeeded", "o/a.png", "u2netp", bucket="spring", version="v1")
    local = Outcome("p/a.png", "succeeded", "o/a.png", "u2netp")

    # Then each one's item id is the producer's id for that item
    assert (in_bucket.item_id, pinned.item_id, local.item_id) == (
        "spring/p/a.png",
        "spring/p/a.png?versionId=v1",
        "p/a.png",
    )


def test_the_item_id_is_not_written_into_the_report_line() -> None:
    # Given an outcome
    outcome = Outcome("p/a.png", "succeeded", "o/a.png", "u2netp", bucket="spring")

    # Then its JSONL line keeps the report's fields, and reads back equal
    assert "item_id" not in outcome.to_json()
    assert Outcome.from_json(outcome.to_json()) == outcome
