"""Caption micro-batches: a full task's next items are read and captioned in one call, each item then
gets its own caption and reuses the bytes read; a retried item is captioned alone; an item the batch
cannot read or decode, or a batch that fails, costs nothing but the batching.

run_batch with the real job store semantics (MemoryJobStore), real folders, the real pipeline and
NudeNet; the captioner and classifier are stand-ins that record what they were given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from cutout_fleet.config.settings import Settings
from cutout_fleet.items import item_id
from cutout_fleet.messages import TaskMessage
from cutout_fleet.options import make_options
from cutout_fleet.safety import read_verdict
from cutout_fleet.state import JobSpec, MemoryJobStore
from cutout_fleet.state.records import ItemStart
from cutout_fleet.worker import caption_batches, pipeline
from cutout_fleet.worker.batch import BatchRuntime, run_batch
from cutout_fleet.worker.safety.captioner import Caption
from cutout_fleet.worker.safety.stages import SafetyStages
from tests.support.images import encode, gradient_rgb
from tests.unit.test_batch_per_item import CentrePredictor, FaultySource, a_runtime
from tests.unit.test_full_workflow_stages import FakeClassifier, canned, stand_in

JOB = "job-full"
SIZES = {"a.png": (24, 16), "b.png": (30, 20), "c.png": (36, 24), "d.png": (42, 28), "e.png": (48, 32)}
KEYS = list(SIZES)


class CountingCaptioner:
    """Says each image's size, so a caption that reached the wrong item shows; raises when told to."""

    device = "cpu"

    def __init__(self, fail_batches_of: int | None = None) -> None:
        self.batches: list[int] = []
        self.fail_batches_of = fail_batches_of

    def caption(self, images: Sequence[Image.Image]) -> list[Caption]:
        self.batches.append(len(images))
        if len(images) == self.fail_batches_of:
            raise RuntimeError("out of memory in a batch")
        return [Caption(text=f"{i.width}x{i.height}", truncated=False, timings_ms={}) for i in images]


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    out.mkdir()
    for key, size in SIZES.items():
        (source / key).write_bytes(encode(gradient_rgb(size), "PNG"))
    return source, out


def full_task(store: MemoryJobStore, source: Path, out: Path) -> TaskMessage:
    options = make_options(model="u2netp", workflow="full", on_review="write", on_block="write")
    store.create(
        JobSpec(job_id=JOB, source=str(source), out=str(out), model="u2netp", queue="gpu", options={})
    )
    store.claim_outputs(JOB, [(item_id("", k), k) for k in KEYS])
    store.finalize(JOB)
    return TaskMessage(job_id=JOB, source=str(source), out=str(out), options=options, keys=KEYS)


def with_stages(runtime: BatchRuntime, captioner: CountingCaptioner) -> BatchRuntime:
    stages = SafetyStages(runtime.settings)
    stages._captioner = stand_in("caption", captioner)
    stages._classifier = stand_in("classifier", FakeClassifier(canned()))
    runtime.__dict__["safety_stages"] = stages  # the cached property's slot
    return runtime


def captions(out: Path) -> dict[str, str | None]:
    found = {}
    for key in KEYS:
        verdict = read_verdict((out / key.replace(".png", ".verdict.json")).read_bytes())
        found[key] = verdict.stages["caption"].text
    return found


def expected() -> dict[str, str]:
    return {key: f"{w}x{h}" for key, (w, h) in SIZES.items()}


def test_a_full_task_captions_its_items_in_micro_batches_and_reads_each_source_once(
    folders: tuple[Path, Path],
) -> None:
    source, out = folders
    store, captioner = MemoryJobStore(), CountingCaptioner()
    faulty = FaultySource(source, {})
    runtime = with_stages(a_runtime(store, CentrePredictor(), faulty), captioner)

    result = run_batch(full_task(store, source, out), runtime, "gpu")

    assert result.recorded == len(KEYS)
    assert captioner.batches == [4, 1]  # CUTOUT_SAFETY__CAPTION_BATCH=4
    assert captions(out) == expected()  # each item got its own image's caption
    assert sorted(faulty.gets) == KEYS  # read once each: the batch's bytes made the cutout
    assert all("caption_batch" in o.timings_ms for o in store.iter_outcomes(JOB))


class RedeliveredStore(MemoryJobStore):
    """As the fleet's store counts attempts: a.png's first attempt died (say, inside a batch)."""

    def begin_item(self, job_id: str, item: str) -> ItemStart:
        start = super().begin_item(job_id, item)
        return replace(start, attempt=2) if item == item_id("", "a.png") else start


def test_an_item_tried_again_is_captioned_alone(folders: tuple[Path, Path]) -> None:
    source, out = folders
    store, captioner = RedeliveredStore(), CountingCaptioner()
    runtime = with_stages(a_runtime(store, CentrePredictor()), captioner)
    message = full_task(store, source, out)

    run_batch(message, runtime, "gpu")

    assert captioner.batches == [1, 4]
    assert captions(out) == expected()


def test_an_item_the_batch_cannot_decode_fails_alone_and_the_rest_are_batched(
    folders: tuple[Path, Path],
) -> None:
    source, out = folders
    (source / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    store, captioner = MemoryJobStore(), CountingCaptioner()
    runtime = with_stages(a_runtime(store, CentrePredictor()), captioner)

    run_batch(full_task(store, source, out), runtime, "gpu")

    assert captioner.batches == [3, 1]  # a, c, d together (b left out), then e
    (outcome,) = [o for o in store.iter_outcomes(JOB) if o.key == "b.png"]
    assert (outcome.status, outcome.error_code) == ("failed", "undecodable")


def test_a_batch_that_fails_leaves_each_item_to_caption_itself(folders: tuple[Path, Path]) -> None:
    source, out = folders
    store, captioner = MemoryJobStore(), CountingCaptioner(fail_batches_of=4)
    runtime = with_stages(a_runtime(store, CentrePredictor()), captioner)

    run_batch(full_task(store, source, out), runtime, "gpu")

    assert captioner.batches == [4, 1, 1, 1, 1, 1]
    assert captions(out) == expected()


def test_a_batch_of_one_is_the_setting_that_turns_batching_off(
    folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, out = folders
    monkeypatch.setenv("CUTOUT_SAFETY__CAPTION_BATCH", "1")
    store, captioner = MemoryJobStore(), CountingCaptioner()
    runtime = with_stages(a_runtime(store, CentrePredictor()), captioner)
    assert runtime.settings == Settings() and runtime.settings.safety.caption_batch == 1

    run_batch(full_task(store, source, out), runtime, "gpu")

    assert captioner.batches == [1, 1, 1, 1, 1]
    assert captions(out) == expected()


class CountingOut(FaultySource):
    """The output folder, counting the checks of each key's "up to date" marker."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, {})
        self.heads: list[str] = []

    def head_metadata(self, key: str, **kwargs: object) -> object:
        self.heads.append(key)
        return self.inner.head_metadata(key, **kwargs)


def test_items_already_up_to_date_are_checked_once_and_not_captioned(
    folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, out = folders
    # Folders keep no metadata: stand in for outputs an earlier run left up to date
    monkeypatch.setattr(caption_batches, "up_to_date", lambda *args, **kwargs: True)
    monkeypatch.setattr(pipeline, "up_to_date", lambda *args, **kwargs: True)
    store, captioner, counted = MemoryJobStore(), CountingCaptioner(), CountingOut(out)
    runtime = with_stages(a_runtime(store, CentrePredictor(), counted), captioner)

    result = run_batch(full_task(store, source, out), runtime, "gpu")

    assert (result.recorded, captioner.batches) == (len(KEYS), [])
    assert all(o.status == "skipped" for o in store.iter_outcomes(JOB))
    assert sorted(counted.heads) == sorted(k.replace(".png", ".verdict.json") for k in KEYS)
