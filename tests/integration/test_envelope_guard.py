"""Guard for the hand-built Celery envelope: CeleryPublisher's Redis entries must match Celery's own.

`CeleryPublisher.encode` probes one real message and then fills in per-task fields by hand, for speed.
If a new Celery or kombu version adds a header, renames a field or changes a default, the fast path would
silently diverge from what workers expect.  So the same task goes out twice into the test Redis DB, once
through CeleryPublisher and once through Celery's `send_task`, each to a scratch queue of its own, and
the two raw list entries are compared field by field.  Only the fields listed in PER_MESSAGE may differ.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from celery import Celery
from celery.worker.request import Request
from kombu import Connection

from cutout_fleet.config.settings import WorkerSettings
from cutout_fleet.messages import (
    MAX_ITEMS_PER_TASK,
    MAX_MESSAGE_BYTES,
    TASK_BYTES_BUDGET,
    TASK_PROCESS_BATCH,
    TaskMessage,
    parse_message,
    payload_bytes,
)
from cutout_fleet.options import ImageOptions
from cutout_fleet.producer.publish import CeleryPublisher, producer_app

pytestmark = pytest.mark.integration

ITEM_TIME_LIMIT_S = 60.0
HARD_LIMIT_GRACE_S = 30.0
MESSAGE = TaskMessage(
    job_id="envelope-guard",
    source="s3://catalog/shoes/",
    out="s3://cutouts/shoes",
    options=ImageOptions(model="u2netp", background="#ffffff"),
    keys=["shoes/red.jpg", "shoes/blue.png", "shoes/green.webp"],
)

# Fields that legitimately differ between two messages of the same task, and why.  Every other field of
# the envelope, its headers and its properties must be present in both with the same value.
PER_MESSAGE = {
    "headers.id": "a new task id for every message",
    "headers.root_id": "a task with no parent is its own root: the task id again",
    "properties.correlation_id": "Celery sets it to the task id",
    "properties.delivery_tag": "kombu draws a new tag for every message",
    "headers.origin": "the sending process (pid@host): ours is the process that probed the template",
    "properties.delivery_info.routing_key": "each message went to a scratch queue of its own",
    "properties.body_encoding": "Celery base64-encodes the body, we write plain JSON: compared decoded",
    "body": "compared after decoding both, in its own test",
}


@dataclass(frozen=True)
class Sent:
    """The raw Redis entries of one task, as CeleryPublisher and as Celery wrote them."""

    ours: dict[str, Any]
    celerys: dict[str, Any]
    ours_raw: bytes
    our_queue: str
    celery_queue: str
    app: Celery
    redis_url: str


@pytest.fixture
def sent(redis_url: str, redis_client: redis.Redis) -> Iterator[Sent]:
    app = producer_app(redis_url)
    publisher = CeleryPublisher(
        app,
        WorkerSettings(item_time_limit_s=ITEM_TIME_LIMIT_S, hard_limit_grace_s=HARD_LIMIT_GRACE_S),
        client=redis_client,
    )
    our_queue, celery_queue = (f"envelope-guard-{side}-{uuid.uuid4().hex[:8]}" for side in ("ours", "celery"))
    soft_s = ITEM_TIME_LIMIT_S * len(MESSAGE.keys)

    publisher.publish(our_queue, [MESSAGE])
    app.send_task(
        TASK_PROCESS_BATCH,
        args=[MESSAGE.model_dump(mode="json", exclude_defaults=True)],
        queue=celery_queue,
        soft_time_limit=soft_s,
        time_limit=soft_s + HARD_LIMIT_GRACE_S,
        argsrepr=f"job {MESSAGE.job_id}: {len(MESSAGE.keys)} keys",
    )

    ours_raw, celerys_raw = _only_entry(redis_client, our_queue), _only_entry(redis_client, celery_queue)
    yield Sent(
        json.loads(ours_raw), json.loads(celerys_raw), ours_raw, our_queue, celery_queue, app, redis_url
    )
    app.close()


def _only_entry(client: redis.Redis, queue: str) -> bytes:
    entries = client.lrange(queue, 0, -1)
    assert len(entries) == 1, f"expected one entry in {queue}, found {len(entries)}"
    return bytes(entries[0])


def _flatten(value: Any, path: str = "") -> dict[str, Any]:
    """{"headers": {"id": 1}} -> {"headers.id": 1}; lists and scalars are leaves."""
    if not isinstance(value, dict) or (path and not value):
        return {path: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(_flatten(item, f"{path}.{key}" if path else key))
    return flat


def _differences(ours: dict[str, Any], celerys: dict[str, Any]) -> list[str]:
    mine, theirs = _flatten(ours), _flatten(celerys)
    lines = []
    for path in sorted(mine.keys() | theirs.keys()):
        if path in PER_MESSAGE:
            continue
        if path not in mine:
            lines.append(f"{path}: only in Celery's (= {theirs[path]!r}); CeleryPublisher lacks it")
        elif path not in theirs:
            lines.append(f"{path}: only in ours (= {mine[path]!r}); Celery has no such field")
        elif mine[path] != theirs[path]:
            lines.append(f"{path}: CeleryPublisher wrote {mine[path]!r}, Celery wrote {theirs[path]!r}")
    return lines


def _decoded_body(envelope: dict[str, Any]) -> Any:
    body = envelope["body"]
    if envelope["properties"].get("body_encoding") == "base64":
        body = base64.b64decode(body)
    return json.loads(body)


def test_our_envelope_headers_and_properties_are_celerys_but_for_the_per_message_fields(sent: Sent) -> None:
    # Given the same task sent by CeleryPublisher and by Celery's send_task (fixture)
    # When every field of both raw entries is compared
    differences = _differences(sent.ours, sent.celerys)

    # Then nothing differs outside PER_MESSAGE
    assert not differences, (
        "CeleryPublisher's hand-built envelope no longer matches this Celery/kombu version's:\n  "
        + "\n  ".join(differences)
        + "\nUpdate producer/publish.py (CeleryPublisher.encode), or, if a field legitimately differs per "
        "message, add it to PER_MESSAGE with the reason."
    )


def test_the_per_message_fields_are_filled_in_as_celery_fills_them(sent: Sent) -> None:
    # Given our entry and Celery's
    ours, celerys = sent.ours, sent.celerys

    # Then each is routed to its own queue, and ids relate to each other as in Celery's own message
    assert ours["properties"]["delivery_info"]["routing_key"] == sent.our_queue
    assert celerys["properties"]["delivery_info"]["routing_key"] == sent.celery_queue
    for envelope in (ours, celerys):
        headers, properties = envelope["headers"], envelope["properties"]
        assert headers["root_id"] == headers["id"] == properties["correlation_id"]
        assert uuid.UUID(headers["id"]) and uuid.UUID(properties["delivery_tag"])
    assert ours["headers"]["id"] != celerys["headers"]["id"]
    assert ours["properties"]["body_encoding"] is None  # plain JSON: what the encoding exemption allows
    assert celerys["properties"]["body_encoding"] == "base64"


def test_our_body_decodes_to_the_same_arguments_as_celerys(sent: Sent) -> None:
    # When both bodies are decoded (base64 for Celery's, plain JSON for ours)
    ours, celerys = _decoded_body(sent.ours), _decoded_body(sent.celerys)

    # Then they are the same protocol-2 body: args, kwargs and the embed (callbacks, chain, chord)
    assert ours == celerys
    assert ours[0] == [MESSAGE.model_dump(mode="json", exclude_defaults=True)]


def test_kombu_reads_our_entry_back_with_our_body(sent: Sent, redis_client: redis.Redis) -> None:
    # Given our entry alone on its queue
    # When kombu's Redis transport takes it, as a worker's consumer does
    with Connection(sent.redis_url) as connection:
        message = connection.default_channel.basic_get(sent.our_queue, no_ack=True)
        assert message is not None, "kombu found no message on our queue"
        decoded = message.decode()

    # Then it is a JSON message whose body is the task's arguments, and the queue is empty
    assert (message.content_type, message.content_encoding) == ("application/json", "utf-8")
    assert message.headers["task"] == TASK_PROCESS_BATCH
    assert decoded == json.loads(sent.ours["body"])
    assert redis_client.llen(sent.our_queue) == 0


def test_a_celery_worker_request_sees_our_task_arguments_and_time_limits(sent: Sent) -> None:
    # Given a worker-side app that knows the task name, and our entry as kombu delivers it
    worker_app = Celery("envelope-guard-worker")

    @worker_app.task(name=TASK_PROCESS_BATCH)
    def process_batch(payload: dict[str, Any]) -> None:
        """Only its name matters: the Request is built, never run."""

    with Connection(sent.redis_url) as connection:
        message = connection.default_channel.basic_get(sent.our_queue, no_ack=True)
        assert message is not None

        # When Celery's worker builds its Request from it
        request = Request(message, app=worker_app)

    # Then it sees the task, its id, its one argument and the per-task soft and hard limits
    soft_s = ITEM_TIME_LIMIT_S * len(MESSAGE.keys)
    assert request.task_name == TASK_PROCESS_BATCH
    assert request.id == sent.ours["headers"]["id"]
    assert request.args == [MESSAGE.model_dump(mode="json", exclude_defaults=True)]
    assert request.kwargs == {}
    assert list(request.time_limits) == [soft_s + HARD_LIMIT_GRACE_S, soft_s]
    assert request.argsrepr == f"job {MESSAGE.job_id}: {len(MESSAGE.keys)} keys"
    assert TaskMessage.model_validate(request.args[0]) == MESSAGE
    worker_app.close()


def test_a_task_over_the_size_budget_goes_out_in_parts_that_workers_accept(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # Given a task of 256 keys of ~1 KiB, each pinned to a version (a retry of long keys can build one)
    keys = [f"shoes/{i:03d}-" + "é" * 500 + ".jpg" for i in range(MAX_ITEMS_PER_TASK)]
    big = MESSAGE.model_copy(update={"keys": keys, "versions": {key: f"v{n}" for n, key in enumerate(keys)}})
    assert payload_bytes(big.payload()) > MAX_MESSAGE_BYTES
    app = producer_app(redis_url)
    publisher = CeleryPublisher(app, WorkerSettings(), client=redis_client)
    queue = f"envelope-guard-split-{uuid.uuid4().hex[:8]}"

    # When it is published
    publisher.publish(queue, [big])

    # Then it went out as several tasks, each one a worker accepts, with only its own keys' versions
    parts = [json.loads(json.loads(entry)["body"])[0][0] for entry in redis_client.lrange(queue, 0, -1)]
    app.close()
    assert len(parts) > 1
    assert sorted(key for part in parts for key in part["keys"]) == sorted(keys)
    for part in parts:
        assert payload_bytes(part) <= TASK_BYTES_BUDGET
        message = parse_message(part)
        assert set(message.versions or {}) == set(message.keys)
