"""run_batch, the worker's plain code for one task message: failures are per item.

Real job store semantics (MemoryJobStore), real local storage and the real image pipeline; only the
model is a stand-in, and one storage wrapper injects faults for chosen keys.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutout_fleet.catalog import load_catalog
from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import SourceMissing, TransientError
from cutout_fleet.items import item_id
from cutout_fleet.messages import TaskMessage, parse_message
from cutout_fleet.options import make_options
from cutout_fleet.state import JobSpec, MemoryJobStore
from cutout_fleet.storage import Storage, open_storage, parse_location
from cutout_fleet.worker.batch import BatchRuntime, run_batch
from cutout_fleet.worker.interrupts import SoftTimeLimitExceeded
from tests.support.images import encode, gradient_rgb

JOB = "job-1"
KEYS = ["a.png", "b.png", "c.png"]


class CentrePredictor:
    """Stands in for a model: a centred square; raises `fail_with` on the image numbered `fail_on`."""

    def __init__(self, fail_on: int | None = None, fail_with: BaseException | None = None) -> None:
        self.calls = 0
        self.fail_on, self.fail_with = fail_on, fail_with

    def predict(self, image: Image.Image) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_on and self.fail_with is not None:
            raise self.fail_with
        mask = np.zeros((8, 8), dtype=np.float32)
        mask[2:6, 2:6] = 1.0
        return mask


class Sessions:
    def __init__(self, predictor: CentrePredictor) -> None:
        self.predictor = predictor

    def get(self, name: str) -> CentrePredictor:
        return self.predictor


class FaultySource:
    """A folder whose `get` fails for chosen keys, as S3 would when throttled or when a key vanished."""

    def __init__(self, folder: Path, faults: dict[str, Exception]) -> None:
        self.uri = str(folder)
        self.inner = open_storage(parse_location(self.uri), Settings().s3)
        self.faults = faults
        self.gets: list[str] = []

    def get(self, key: str, **kwargs: object) -> object:
        self.gets.append(key)
        if key in self.faults:
            raise self.faults[key]
        return self.inner.get(key, **kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    out.mkdir()
    for key in KEYS:
        (source / key).write_bytes(encode(gradient_rgb((24, 16)), "PNG"))
    return source, out


def a_job(store: MemoryJobStore, source: Path, out: Path) -> TaskMessage:
    options = make_options(model="u2netp")
    store.create(
        JobSpec(job_id=JOB, source=str(source), out=str(out), model="u2netp", queue="cpu", options={})
    )
    store.claim_outputs(JOB, [(item_id("", k), k) for k in KEYS])
    store.finalize(JOB)
    return TaskMessage(job_id=JOB, source=str(source), out=str(out), options=options, keys=KEYS)


def a_runtime(
    store: MemoryJobStore,
    predictor: CentrePredictor,
    source: FaultySource | None = None,
    draining: Callable[[], bool] = lambda: False,
) -> BatchRuntime:
    settings = Settings()

    def storage_for(uri: str) -> Storage:
        if source is not None and uri == source.uri:
            return source  # type: ignore[return-value]
        return open_storage(parse_location(uri), settings.s3)

    return BatchRuntime(
        settings=settings,
        catalog=load_catalog(settings),
        store=store,
        sessions=Sessions(predictor),  # type: ignore[arg-type]
        open_storage=storage_for,
        on_job_complete=lambda job_id, queue: None,
        draining=draining,
        local_folders=True,  # as `cutout run`: these tests work on folders
    )


def statuses(store: MemoryJobStore) -> dict[str, str]:
    return {
        o.key: f"{o.status}:{o.error_code}" if o.error_code else o.status for o in store.iter_outcomes(JOB)
    }


def test_a_permanent_failure_fails_that_item_alone(folders: tuple[Path, Path]) -> None:
    # Given a task of three items whose second source object is missing
    store = MemoryJobStore()
    message = a_job(store, *folders)
    source = FaultySource(folders[0], {"b.png": SourceMissing("b.png: gone")})

    # When the worker runs it
    result = run_batch(message, a_runtime(store, CentrePredictor(), source), "cpu")

    # Then that item fails with its reason and its neighbours succeed; nothing is left to retry
    assert statuses(store) == {"a.png": "succeeded", "b.png": "failed:source_missing", "c.png": "succeeded"}
    assert result.retry == [] and result.resend == []


def test_a_transient_failure_hands_back_that_item_alone_and_its_neighbours_finish(
    folders: tuple[Path, Path],
) -> None:
    # Given a task whose first item's download is throttled
    store = MemoryJobStore()
    message = a_job(store, *folders)
    source = FaultySource(folders[0], {"a.png": TransientError("SlowDown")})

    # When the worker runs it
    result = run_batch(message, a_runtime(store, CentrePredictor(), source), "cpu")

    # Then the later items are done now, and only the throttled one is handed back for a retry
    assert statuses(store) == {"b.png": "succeeded", "c.png": "succeeded"}
    assert result.retry == ["a.png"]
    assert isinstance(result.retry_error, TransientError)
    # and its attempt is not counted toward `poison` (the worker survived it)
    assert store.begin_item(JOB, item_id("", "a.png")).attempt == 1


def test_when_the_service_is_down_the_rest_of_the_task_is_deferred_untried(
    folders: tuple[Path, Path],
) -> None:
    # Given a source that throttles every item of a task longer than the consecutive-failure cut-off
    store = MemoryJobStore()
    keys = [f"k{i}.png" for i in range(6)]
    for key in keys:
        (folders[0] / key).write_bytes(encode(gradient_rgb((8, 8)), "PNG"))
    store.create(
        JobSpec(
            job_id=JOB, source=str(folders[0]), out=str(folders[1]), model="u2netp", queue="cpu", options={}
        )
    )
    store.claim_outputs(JOB, [(k, k) for k in keys])
    message = TaskMessage(
        job_id=JOB, source=str(folders[0]), out=str(folders[1]), options=make_options(), keys=keys
    )
    source = FaultySource(folders[0], {k: TransientError("unreachable") for k in keys})

    # When the worker runs it
    result = run_batch(message, a_runtime(store, CentrePredictor(), source), "cpu")

    # Then it stops asking after three failures in a row and hands every item back, none failed (k1 was
    # asked for while k0 ran, by the read-ahead, and once only; reading ahead stops at the first failure)
    assert sorted(source.gets) == keys[:3]
    assert result.retry == keys
    assert statuses(store) == {}


def test_a_soft_time_limit_inside_the_model_is_a_timeout_not_a_model_error(
    folders: tuple[Path, Path],
) -> None:
    # Given a model call that overruns the soft time limit on the second item
    store = MemoryJobStore()
    message = a_job(store, *folders)
    predictor = CentrePredictor(fail_on=2, fail_with=SoftTimeLimitExceeded())

    # When the worker runs the task
    result = run_batch(message, a_runtime(store, predictor), "cpu")

    # Then that item fails as `timeout`, and the item it did not reach goes out again as a new task
    assert statuses(store) == {"a.png": "succeeded", "b.png": "failed:timeout"}
    assert result.timed_out == 1
    assert result.resend == ["c.png"]


def test_a_message_with_fields_a_newer_producer_added_runs_on_todays_worker(
    folders: tuple[Path, Path],
) -> None:
    # Given a task message carrying an optional field and an option this worker does not know
    store = MemoryJobStore()
    message = a_job(store, *folders)
    payload = message.model_dump(mode="json", exclude_defaults=True)
    payload["canvas"] = {"size": [1000, 1000]}
    payload["options"] = {**payload["options"], "sharpen": 0.5}

    # When today's worker code parses and runs it
    result = run_batch(parse_message(payload), a_runtime(store, CentrePredictor()), "cpu")

    # Then every item is processed, as if the unknown fields were not there
    assert result.recorded == 3
    assert statuses(store) == dict.fromkeys(KEYS, "succeeded")


def test_a_warm_shutdown_hands_back_the_items_not_yet_started(folders: tuple[Path, Path]) -> None:
    # Given a worker that begins its warm shutdown while the first item of a task runs
    store = MemoryJobStore()
    message = a_job(store, *folders)
    predictor = CentrePredictor()

    # When the task runs
    result = run_batch(message, a_runtime(store, predictor, draining=lambda: predictor.calls >= 1), "cpu")

    # Then the running item finished, and the two not started are handed back to be sent again
    assert statuses(store) == {"a.png": "succeeded"}
    assert result.resend == ["b.png", "c.png"] and result.handed_back == 2
