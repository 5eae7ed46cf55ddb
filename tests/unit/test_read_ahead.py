"""A task reads its next item while the current one is in the model (worker/read_ahead.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import SourceMissing
from cutout_fleet.messages import TaskMessage
from cutout_fleet.options import make_options
from cutout_fleet.state import JobSpec, MemoryJobStore
from cutout_fleet.worker.batch import run_batch
from tests.support.images import encode, gradient_rgb
from tests.unit.test_batch_per_item import JOB, CentrePredictor, FaultySource, a_runtime, statuses

KEYS = [f"k{i}.png" for i in range(4)]
WAIT_S = 10.0  # far longer than a local read; reached only if the read-ahead never comes


class SignallingSource(FaultySource):
    """A folder that says when each key has been read."""

    def __init__(self, folder: Path, faults: dict[str, Exception]) -> None:
        super().__init__(folder, faults)
        self.read = {key: threading.Event() for key in KEYS}

    def get(self, key: str, **kwargs: object) -> object:
        try:
            return super().get(key, **kwargs)
        finally:
            self.read[key].set()


class WaitingPredictor(CentrePredictor):
    """The model of item n waits until item n + 1 has been read: it only returns in time if the read
    happened while it ran."""

    def __init__(self, source: SignallingSource) -> None:
        super().__init__()
        self.source = source
        self.overlapped: list[bool] = []

    def predict(self, image: Image.Image) -> np.ndarray:
        index = self.calls
        if index + 1 < len(KEYS):
            self.overlapped.append(self.source.read[KEYS[index + 1]].wait(WAIT_S))
        return super().predict(image)


@pytest.fixture
def job(tmp_path: Path) -> tuple[MemoryJobStore, TaskMessage, Path]:
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    out.mkdir()
    for key in KEYS:
        (source / key).write_bytes(encode(gradient_rgb((16, 12)), "PNG"))
    store = MemoryJobStore()
    store.create(
        JobSpec(job_id=JOB, source=str(source), out=str(out), model="u2netp", queue="cpu", options={})
    )
    store.claim_outputs(JOB, [(k, k) for k in KEYS])
    message = TaskMessage(job_id=JOB, source=str(source), out=str(out), options=make_options(), keys=KEYS)
    return store, message, source


def test_the_next_item_is_read_while_the_current_one_is_in_the_model(
    job: tuple[MemoryJobStore, TaskMessage, Path],
) -> None:
    store, message, folder = job
    source = SignallingSource(folder, {})
    predictor = WaitingPredictor(source)

    run_batch(message, a_runtime(store, predictor, source), "cpu")  # type: ignore[arg-type]

    assert predictor.overlapped == [True, True, True]
    assert sorted(source.gets) == KEYS  # each source read once
    assert set(statuses(store).values()) == {"succeeded"}


def test_without_read_ahead_each_item_reads_when_it_starts(
    job: tuple[MemoryJobStore, TaskMessage, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, message, folder = job
    source = FaultySource(folder, {})
    runtime = a_runtime(store, CentrePredictor(), source)
    settings = Settings(worker=Settings().worker.model_copy(update={"read_ahead": False}))
    monkeypatch.setattr(runtime, "settings", settings)

    run_batch(message, runtime, "cpu")

    assert source.gets == KEYS  # strictly one after the other
    assert set(statuses(store).values()) == {"succeeded"}


def test_an_error_met_reading_ahead_is_the_items_own(job: tuple[MemoryJobStore, TaskMessage, Path]) -> None:
    store, message, folder = job
    source = FaultySource(folder, {"k1.png": SourceMissing("k1.png: no such object")})

    run_batch(message, a_runtime(store, CentrePredictor(), source), "cpu")

    assert statuses(store) == {
        "k0.png": "succeeded",
        "k1.png": "failed:source_missing",
        "k2.png": "succeeded",
        "k3.png": "succeeded",
    }
    assert sorted(source.gets) == KEYS  # the missing key was asked for once, ahead
