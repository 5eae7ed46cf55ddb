"""`--workflow full` end to end on the gpu queue (on this machine's CPU): BEN2's contract cuts out, then
NudeNet, a Florence-2 caption and the Llama classifier feed the gate, and a complete verdict lands in S3.

The caption and classifier models are tiny and random (tests/support/hub_models.py): their words and
scores mean nothing, so these tests check what the fleet guarantees whatever a model says: every stage's
slot filled, the models named with their pinned revisions, a decision with its reasons, and `review`
with the reason when the classifier cannot answer in time.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from PIL import Image

from cutout_fleet.safety import read_verdict
from cutout_fleet.safety.classification import SAFETY_DOMAINS
from tests.support.fleet import Fleet, FleetFactory, sample_catalog, start_worker
from tests.support.hub_models import CAPTION_PIN, CLASSIFIER_PIN
from tests.support.tiny_models import BEN2_MODEL

pytestmark = pytest.mark.integration

ALLOW_CPU = "CUTOUT_WORKER__ALLOW_CPU"


def gpu_worker(fleet: Fleet, **overrides: str) -> None:
    worker = start_worker(fleet.cutout_bin, fleet.env(**overrides), fleet.log_dir, queue="gpu", concurrency=1)
    fleet.workers.append(worker)


def full_job(fleet: Fleet, src: str, out: str, *flags: str) -> dict[str, Any]:
    job = fleet.enqueue(
        f"s3://{src}/catalog/", "--out", f"s3://{out}/cutouts", "--model", BEN2_MODEL,
        "--workflow", "full", "--on-block", "write", "--on-review", "write", *flags,
    )  # fmt: skip
    return fleet.wait_for_job(job["job_id"], timeout_s=300, check=True)


def test_a_full_job_writes_cutouts_and_complete_verdicts_through_a_gpu_queue_worker(
    make_fleet: FleetFactory, hub_models: dict[str, str]
) -> None:
    with make_fleet(
        models=[BEN2_MODEL], **{ALLOW_CPU: "true", "CUTOUT_ITEMS_PER_TASK": "2", **hub_models}
    ) as fleet:
        # Given a gpu-queue worker with every stage of the full workflow (tiny random models)
        gpu_worker(fleet)
        src, out = fleet.new_bucket("in"), fleet.new_bucket("out")
        photos = dict(sorted(sample_catalog().items())[:4])
        fleet.upload(src, "catalog/", photos)

        # When a full job runs over the sample photos, asking for two catalog attributes
        status = full_job(fleet, src, out, "--attributes", "colors,product_type")

        # Then every photo has its cutout, at its size, and a verdict
        assert status["state"] == "done" and status["succeeded"] == len(photos), fleet.logs()
        assert sum(status["decisions"].values()) == len(photos)
        for key, data in photos.items():
            stem = "cutouts/" + key.rsplit(".", 1)[0]
            cutout = Image.open(io.BytesIO(fleet.read(out, stem + ".png")))
            assert cutout.size == Image.open(io.BytesIO(data)).size
            verdict = read_verdict(fleet.read(out, stem + ".verdict.json"))

            # And the verdict is complete: NudeNet ran, the caption is text, the classifier answered
            # with every domain scored (or failed, with its reason, which is then a review reason)
            assert verdict.level == "full" and verdict.source.key == "catalog/" + key
            assert verdict.stages["nudenet"].status == "ok"
            caption = verdict.stages["caption"]
            assert caption.status == "ok" and isinstance(caption.text, str), caption
            classifier = verdict.stages["classifier"]
            if classifier.status == "ok":
                assert set(classifier.scores) == set(SAFETY_DOMAINS)
                assert all(0.0 <= score <= 1.0 for score in classifier.scores.values())
                assert classifier.category and set(classifier.attributes) == {"colors", "product_type"}
            else:
                assert classifier.status == "failed" and classifier.error, classifier
                assert ("classifier", "failed") in [(r.stage, r.rule) for r in verdict.reasons]
            # The models that ran, with the pinned revisions; the decision is the gate's
            models = {model.stage: model for model in verdict.models}
            assert models["caption"].revision == CAPTION_PIN.revision
            assert models["classifier"].revision == CLASSIFIER_PIN.revision
            assert models["caption"].providers == ("cpu",)
            assert verdict.decision in ("allow", "review", "block")
            assert set(verdict.timings_ms) >= {"nudenet", "caption", "classifier", "gate"}

        # And the worker loaded the caption and classifier once, at its start, and logged GPU memory
        log = fleet.workers[0].log()
        assert "GPU memory at worker start" in log and "no GPU visible" in log


def test_a_classifier_that_cannot_answer_in_time_sends_every_image_to_review(
    make_fleet: FleetFactory, hub_models: dict[str, str]
) -> None:
    with make_fleet(models=[BEN2_MODEL], **{ALLOW_CPU: "true", **hub_models}) as fleet:
        # Given a worker whose classifier must answer within a millisecond
        gpu_worker(fleet, CUTOUT_SAFETY__CLASSIFIER_TIMEOUT_S="0.001")
        src, out = fleet.new_bucket("in"), fleet.new_bucket("out")
        photos = dict(sorted(sample_catalog().items())[:2])
        fleet.upload(src, "catalog/", photos)

        # When a full job runs
        status = full_job(fleet, src, out)

        # Then every item succeeded (a late answer never fails an item), and each verdict says review,
        # with the classifier's failure as the reason
        assert status["succeeded"] == len(photos) and status["decisions"] == {"review": len(photos)}
        for key in photos:
            verdict = read_verdict(fleet.read(out, "cutouts/" + key.rsplit(".", 1)[0] + ".verdict.json"))
            classifier = verdict.stages["classifier"]
            assert classifier.status == "failed" and "timed out" in (classifier.error or "")
            reasons = [(r.decision, r.stage, r.rule) for r in verdict.reasons]
            assert ("review", "classifier", "failed") in reasons
        report = json.loads(fleet.wait_for_object(out, f"cutouts/_reports/{status['job_id']}.summary.json"))
        assert report["decisions"] == {"review": len(photos)}
