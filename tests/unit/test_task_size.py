"""Task messages stay under the workers' size limit however long the keys, a refused one still names its
job and keys, and a job id is checked whole before any job exists."""

from __future__ import annotations

import pytest

from cutout_fleet.messages import (
    MAX_ITEMS_PER_TASK,
    MAX_KEY_BYTES,
    MAX_MESSAGE_BYTES,
    MESSAGE_VERSION,
    TASK_BYTES_BUDGET,
    InvalidJobId,
    InvalidMessage,
    TaskMessage,
    parse_message,
    payload_bytes,
    readable_parts,
    validate_job_id,
)
from cutout_fleet.options import ImageOptions
from cutout_fleet.producer.enqueue import EnqueueRequest, enqueue_job
from cutout_fleet.producer.listing import ListingChunk, SourceItem
from cutout_fleet.producer.publish import CollectingPublisher
from cutout_fleet.state import MemoryJobStore
from cutout_fleet.storage import parse_location


def _long_key(i: int, char: str = "é") -> str:
    """A key of almost S3's 1024 bytes; `é` is 2 bytes in UTF-8 and 6 characters in the JSON workers
    measure (`\\u00e9`)."""
    stem = f"in/{i:04d}-"
    fill = (MAX_KEY_BYTES - len(stem) - len(".png")) // len(char.encode())
    return stem + char * fill + ".png"


def _request(job_id: str | None = "sizes", items_per_task: int = MAX_ITEMS_PER_TASK) -> EnqueueRequest:
    return EnqueueRequest(
        source=parse_location("s3://shop/in/"),
        out=parse_location("s3://shop/out"),
        options=ImageOptions(model="u2netp"),
        queue_for=lambda _model: "cpu",
        items_per_task=items_per_task,
        job_id=job_id,
        mapping="full",
    )


def _enqueue(items: list[SourceItem], items_per_task: int = MAX_ITEMS_PER_TASK) -> list[TaskMessage]:
    publisher = CollectingPublisher()
    enqueue_job(_request(items_per_task=items_per_task), MemoryJobStore(), [ListingChunk(items)], publisher)
    return publisher.messages


# --- the producer splits tasks by bytes --------------------------------------------------------------------


@pytest.mark.parametrize("char", ["é", "😀", "a"])
@pytest.mark.parametrize("versioned", [False, True])
def test_tasks_of_long_keys_stay_under_the_budget_and_carry_every_key_once(
    char: str, versioned: bool
) -> None:
    # Given 600 keys of ~1 KiB (256 per task would be far over the limit), pinned or not to versions
    items = [
        SourceItem(_long_key(i, char), bucket="shop", version=f"v{i:032d}" if versioned else None)
        for i in range(600)
    ]

    # When they are enqueued 256 per task
    messages = _enqueue(items)

    # Then every task fits the budget (as workers measure it), and every key is in exactly one task
    sizes = [payload_bytes(message.payload()) for message in messages]
    assert max(sizes) <= TASK_BYTES_BUDGET < MAX_MESSAGE_BYTES
    assert [key for message in messages for key in message.keys] == [item.key for item in items]
    for message in messages:
        parse_message(message.payload())  # a worker accepts it
        if versioned:
            assert set(message.versions or {}) == set(message.keys)
    # And a task is closed only when full: by count, or when one more item could not fit
    one_item_at_most = 2 * (3 * MAX_KEY_BYTES + 64)  # escaped ×3 at most, twice when versioned
    for message, size in zip(messages[:-1], sizes[:-1], strict=True):
        assert len(message.keys) == MAX_ITEMS_PER_TASK or size > TASK_BYTES_BUDGET - one_item_at_most


def test_short_keys_still_fill_tasks_by_count() -> None:
    items = [SourceItem(f"in/{i}.png", bucket="shop") for i in range(40)]
    assert [len(message.keys) for message in _enqueue(items, items_per_task=16)] == [16, 16, 8]


def test_a_task_over_the_limit_is_what_workers_refuse() -> None:
    # The limit the split protects: 256 such keys in one task are refused by a worker.
    message = TaskMessage(
        job_id="j",
        source="s3://shop/",
        out="s3://shop/out",
        options=ImageOptions(),
        keys=[_long_key(i) for i in range(MAX_ITEMS_PER_TASK)],
    )
    with pytest.raises(InvalidMessage, match="over"):
        parse_message(message.payload())


def test_with_keys_keeps_only_those_keys_versions() -> None:
    message = TaskMessage(
        job_id="j",
        source="s3://shop/",
        out="s3://shop/out",
        options=ImageOptions(),
        keys=["a.png", "b.png", "c.png"],
        versions={"a.png": "1", "c.png": "3"},
    )
    assert message.with_keys(["a.png", "b.png"]).versions == {"a.png": "1"}
    assert message.with_keys(["b.png"]).versions is None


# --- a refused message still names its job and keys ------------------------------------------------------


def _payload(**changes: object) -> dict[str, object]:
    message = TaskMessage(
        job_id="j1",
        source="s3://in/p/",
        out="s3://out/o",
        options=ImageOptions(),
        keys=["p/a.jpg", "p/b.jpg"],
    )
    return {**message.payload(), **changes}


def test_an_oversized_payload_is_read_back_as_its_job_and_keys() -> None:
    payload = _payload(padding="x" * MAX_MESSAGE_BYTES)  # an unknown field: ignored, but it counts
    with pytest.raises(InvalidMessage, match="over"):
        parse_message(payload)

    (part,) = readable_parts(payload)

    assert (part.job_id, part.keys, part.source) == ("j1", ["p/a.jpg", "p/b.jpg"], "s3://in/p/")


def test_too_many_keys_are_read_back_in_parts_that_workers_accept() -> None:
    keys = [f"p/{i}.jpg" for i in range(2 * MAX_ITEMS_PER_TASK + 1)]
    parts = readable_parts(_payload(keys=[*keys, "", 7]))
    assert [len(part.keys) for part in parts] == [MAX_ITEMS_PER_TASK, MAX_ITEMS_PER_TASK, 1]
    assert [key for part in parts for key in part.keys] == keys


@pytest.mark.parametrize(
    "payload",
    [
        "not a dict",
        {"job_id": "j1"},
        _payload(job_id="x\n"),
        _payload(options={"sensitivity": 7}),
        _payload(v=MESSAGE_VERSION + 1),
        _payload(keys="p/a.jpg"),
    ],
)
def test_a_payload_without_a_readable_job_and_keys_gives_nothing(payload: object) -> None:
    assert readable_parts(payload) == []


# --- job ids -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("job_id", ["x", "Job-2026.05_01", "a" * 64])
def test_a_valid_job_id_passes(job_id: str) -> None:
    assert validate_job_id(job_id) == job_id


@pytest.mark.parametrize("job_id", ["x\n", "x\r\n", "\nx", "", "-x", "a" * 65, "a b", "a/b", "é"])
def test_a_job_id_is_checked_whole(job_id: str) -> None:
    with pytest.raises(InvalidJobId, match="letters, digits"):
        validate_job_id(job_id)


def test_a_request_with_a_bad_job_id_is_refused_before_any_job_exists() -> None:
    store = MemoryJobStore()
    with pytest.raises(InvalidJobId):
        enqueue_job(_request(job_id="x\n"), store, [], CollectingPublisher())
    assert store.get("x\n") is None
