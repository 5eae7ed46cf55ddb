"""The lease board, recovery and `cutout requeue` on the real Redis (no worker processes).

A dead holder is made by writing its last heartbeat in the past (Redis server time), so nothing here
waits for a lease to run out.
"""

from __future__ import annotations

import json

import pytest
import redis

from cutout_fleet.config.settings import WorkerSettings
from cutout_fleet.errors import JobStateConflict
from cutout_fleet.items import item_id
from cutout_fleet.messages import TaskMessage
from cutout_fleet.options import ImageOptions
from cutout_fleet.outcomes import Outcome
from cutout_fleet.producer.publish import CeleryPublisher, CollectingPublisher, producer_app
from cutout_fleet.producer.requeue import requeue_job
from cutout_fleet.producer.status import stalled_tasks
from cutout_fleet.recovery import recover_stalled
from cutout_fleet.state import JobSpec, RedisJobStore
from cutout_fleet.state.leases import LeaseBoard
from cutout_fleet.state.redis_keys import HELD_KEY, KOMBU_UNACKED_KEY, WORKERS_KEY

pytestmark = pytest.mark.integration

LEASE_S = 60.0
JOB = "lease-job"
BUCKET = "catalog"
KEYS = ["in/a.png", "in/b.png", "in/c.png"]


@pytest.fixture
def board(redis_client: redis.Redis) -> LeaseBoard:
    return LeaseBoard(redis_client, LEASE_S)


@pytest.fixture
def store(redis_client: redis.Redis) -> RedisJobStore:
    store = RedisJobStore(redis_client, 3600)
    store.create(JobSpec(JOB, f"s3://{BUCKET}/in/", "s3://out/o", "u2netp", "cpu", {}))
    store.claim_outputs(JOB, [(item_id(BUCKET, k), k) for k in KEYS])
    store.finalize(JOB)
    return store


def a_payload(keys: list[str] = KEYS) -> dict[str, object]:
    message = TaskMessage(
        job_id=JOB, source=f"s3://{BUCKET}/in/", out="s3://out/o", options=ImageOptions(), keys=keys
    )
    return message.model_dump(mode="json", exclude_defaults=True)


def silence(board: LeaseBoard, client: redis.Redis, holder: str, seconds: float) -> None:
    """Make `holder`'s last heartbeat, and the time it took its tasks, `seconds` ago."""
    past = board.server_time() - seconds
    client.zadd(WORKERS_KEY, {holder: past})
    for task_id, line in client.hgetall(HELD_KEY).items():
        entry = json.loads(line)
        if entry["holder"] == holder:
            client.hset(HELD_KEY, task_id, json.dumps({**entry, "since": past}))


def record(store: RedisJobStore, key: str) -> None:
    store.record(JOB, Outcome(key, "succeeded", key, "u2netp", bucket=BUCKET))


def test_a_live_holders_task_is_not_taken(board: LeaseBoard, store: RedisJobStore) -> None:
    board.beat("alive")
    board.hold("t1", "alive", JOB, "cpu", a_payload())

    assert board.take_stalled() == []
    assert [t.task_id for t in board.held(JOB)] == ["t1"]


def test_a_silent_holders_task_is_taken_once(board: LeaseBoard, redis_client: redis.Redis) -> None:
    # Given a holder whose last heartbeat is older than the lease
    board.beat("dead")
    board.hold("t1", "dead", JOB, "cpu", a_payload())
    silence(board, redis_client, "dead", LEASE_S + 1)

    # When two recovery passes run
    first, second = board.take_stalled(), board.take_stalled()

    # Then the first takes its task (and forgets the holder), the second finds nothing
    assert [(t.task_id, t.holder, t.keys) for t in first] == [("t1", "dead", KEYS)]
    assert second == [] and "dead" not in board.last_beats()


def test_a_redelivery_elsewhere_takes_the_entry_over(board: LeaseBoard) -> None:
    # Given a task held by one process, delivered again to another (same task id)
    board.hold("t1", "old", JOB, "cpu", a_payload())
    board.hold("t1", "new", JOB, "cpu", a_payload())

    # When the old holder ends its run, it releases nothing of the new one's
    assert board.release("t1", "old") is False
    assert [t.holder for t in board.held(JOB)] == ["new"]
    assert board.release("t1", "new") is True


def test_recovery_sends_only_the_items_without_an_outcome(
    board: LeaseBoard, store: RedisJobStore, redis_client: redis.Redis
) -> None:
    # Given a dead holder's task of three items, one of which was recorded before it died
    board.hold("t1", "dead", JOB, "cpu", a_payload())
    silence(board, redis_client, "dead", LEASE_S + 1)
    record(store, "in/a.png")
    sent: list[tuple[str, TaskMessage]] = []

    # When a live worker runs a recovery pass
    resent = recover_stalled(board, store, lambda queue, message: sent.append((queue, message)))

    # Then the two unfinished items go back to their queue as one task
    assert [(q, m.keys) for q, m in sent] == [("cpu", ["in/b.png", "in/c.png"])]
    assert resent[0].keys == 2 and resent[0].from_holder == "dead"


def test_status_names_the_stalled_items_and_when_they_come_back(
    board: LeaseBoard, store: RedisJobStore, redis_client: redis.Redis
) -> None:
    board.hold("t1", "dead", JOB, "cpu", a_payload())
    silence(board, redis_client, "dead", 40)  # two beats missed, lease not over yet

    [stalled] = stalled_tasks(store, board, JOB)

    assert stalled.holder == "dead" and stalled.items == 3 and stalled.keys == KEYS
    assert 39 <= stalled.silent_s <= 45
    assert LEASE_S / 4 <= stalled.resend_in_s <= 20 + LEASE_S / 4 + 1


def test_requeue_sends_held_and_reserved_items_once_and_skips_recorded_ones(
    board: LeaseBoard, store: RedisJobStore, redis_client: redis.Redis, redis_url: str
) -> None:
    # Given a running task (held, and in kombu's unacked hash) and a reserved one, one item recorded
    encoder = CeleryPublisher(producer_app(redis_url), WorkerSettings(), client=redis_client)
    running, reserved = a_payload(KEYS[:2]), a_payload(KEYS[2:])
    board.hold("t1", "alive", JOB, "cpu", running)
    for tag, payload in (("d1", running), ("d2", reserved)):
        envelope = encoder.encode("cpu", TaskMessage.model_validate(payload))
        redis_client.hset(KOMBU_UNACKED_KEY, tag, json.dumps([json.loads(envelope), "", "cpu"]))
    record(store, "in/a.png")
    publisher = CollectingPublisher()

    # When an operator requeues the job
    result = requeue_job(store, board, redis_client, publisher, JOB)

    # Then each outstanding item is sent once, and the recorded one not at all
    sent = sorted(key for message in publisher.messages for key in message.keys)
    assert sent == ["in/b.png", "in/c.png"]
    assert result.items == 2 and result.from_stalled == 0


def test_requeue_refuses_a_job_that_is_not_running(
    store: RedisJobStore, board: LeaseBoard, redis_client: redis.Redis
) -> None:
    for key in KEYS:
        record(store, key)  # the job completes

    with pytest.raises(JobStateConflict, match="only a running job"):
        requeue_job(store, board, redis_client, CollectingPublisher(), JOB)
