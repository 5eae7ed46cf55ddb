"""Level `full` in one process: the stages in order, what each hands the next, and how a caption or
classifier that fails, answers badly or cannot load becomes a `review` with its reason (never an item
failure).  The models here are stand-ins with the real runners' interfaces; the real runners have their
own tests (test_florence_captioner.py, test_llama_classifier.py) and run together in
tests/integration/test_full_workflow.py."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import ConfigError, InvalidOptions
from cutout_fleet.options import make_options, options_hash
from cutout_fleet.safety import SourceRef, build_verdict, load_policy, safety_fingerprint
from cutout_fleet.safety.classification import SAFETY_DOMAINS, Classification, parse_answer
from cutout_fleet.safety.verdict import Detection, ModelRef
from cutout_fleet.worker.safety import stages as stages_module
from cutout_fleet.worker.safety.captioner import Caption
from cutout_fleet.worker.safety.classifier import ClassifierAnswer
from cutout_fleet.worker.safety.stages import SafetyStages, _PerProcess


@dataclass
class FakeCaptioner:
    text: str = "a red leather handbag on a white background"
    fail: bool = False
    device: str = "cpu"

    def caption(self, images: Sequence[Image.Image]) -> list[Caption]:
        if self.fail:
            raise RuntimeError("CUDA out of memory")
        return [Caption(text=self.text, truncated=False, timings_ms={"generate": 1.0}) for _ in images]


@dataclass
class FakeClassifier:
    answer: str
    device: str = "cpu"
    seen: list[tuple[str | None, tuple[Detection, ...], tuple[str, ...]]] = field(default_factory=list)

    def classify(
        self, caption: str | None, detections: Sequence[Detection], attributes: Sequence[str] = ()
    ) -> ClassifierAnswer:
        self.seen.append((caption, tuple(detections), tuple(attributes)))
        try:
            found: Classification | None = parse_answer(self.answer, attributes)
            error = None
        except ValueError as exc:
            found, error = None, f"malformed answer: {exc}"
        return ClassifierAnswer(found, error, self.answer, "stop", {"generate": 2.0})


class FakeDetector:
    model = None

    def detect(self, image: Image.Image) -> object:
        raise AssertionError("replaced below")


def canned(scores: dict[str, float] | None = None, **attributes: object) -> str:
    """A classifier completion as a well-behaved model writes it."""
    scores = {domain: 0.01 for domain in SAFETY_DOMAINS} | (scores or {})
    answer: dict[str, object] = {
        "domains": {d: {"score": s, "reason": f"nothing about {d}"} for d, s in scores.items()},
        "category": "safe" if max(scores.values()) < 0.5 else max(scores, key=scores.__getitem__),
    }
    if attributes:
        answer["attributes"] = attributes
    return json.dumps(answer)


def stand_in(stage: str, runner: object | None, missing: str = "") -> _PerProcess:  # type: ignore[type-arg]
    """A stage's per-process model slot holding `runner` (None: a model that is not pulled)."""
    model = ModelRef(stage=stage, id=f"fake-{stage}", revision="0" * 40, sha256="", providers=("cpu",))

    def load() -> tuple[object, ModelRef]:
        if runner is None:
            raise ConfigError(f"{missing} is not pulled")
        return runner, model

    return _PerProcess(load)


def full_stages(captioner: FakeCaptioner | None, classifier: FakeClassifier | None) -> SafetyStages:
    stages = SafetyStages(Settings(model_dir=Path("/nonexistent")))
    stages._captioner = stand_in("caption", captioner, "florence")
    stages._classifier = stand_in("classifier", classifier, "llama")
    return stages


@pytest.fixture(autouse=True)
def _no_nudenet_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    """NudeNet has its own tests: here it finds one covered female breast (to see the classifier get it)."""
    from cutout_fleet.safety.verdict import StageResult, StageStatus

    def run_nudenet(self: SafetyStages, image: Image.Image) -> tuple[StageResult, None]:
        found = (Detection(label="FEMALE_BREAST_COVERED", score=0.41, box=(1, 2, 3, 4)),)
        return StageResult(status=StageStatus.OK, model="nudenet-320n", detections=found), None

    monkeypatch.setattr(stages_module.SafetyStages, "_run_nudenet", run_nudenet)


IMAGE = Image.new("RGB", (64, 48), (200, 30, 30))


def verdict_for(stages: SafetyStages, attributes: Sequence[str] = ()):  # type: ignore[no-untyped-def]
    run = stages.run("full", IMAGE, attributes=attributes)
    return build_verdict(
        level="full",
        policy=load_policy(),
        source=SourceRef(bucket="b", key="k.png"),
        stages=run.stages,
        models=run.models,
        timings_ms=run.timings_ms,
    )


def test_the_classifier_reads_the_caption_and_the_detections_and_its_scores_reach_the_gate() -> None:
    classifier = FakeClassifier(canned(product_type="handbag", colors=["red"]))
    verdict = verdict_for(full_stages(FakeCaptioner(), classifier), ("colors", "product_type"))

    (caption, detections, attributes) = classifier.seen[0]
    assert caption == "a red leather handbag on a white background"
    assert [d.label for d in detections] == ["FEMALE_BREAST_COVERED"]
    assert attributes == ("colors", "product_type")
    result = verdict.stages["classifier"]
    assert result.status == "ok" and set(result.scores) == set(SAFETY_DOMAINS)
    assert result.attributes == {"product_type": "handbag", "colors": ["red"]}
    assert result.category == "safe" and result.explanations["drugs"] == "nothing about drugs"
    assert verdict.stages["caption"].text == "a red leather handbag on a white background"
    assert verdict.decision == "allow", verdict.reasons


@pytest.mark.parametrize(
    ("scores", "decision", "domain"),
    [
        ({"sexual": 0.9}, "block", "sexual"),
        ({"weapons": 0.7}, "review", "weapons"),
        ({"minors": 0.6}, "block", "minors"),
    ],
)
def test_a_high_domain_score_reviews_or_blocks_under_the_built_in_policy(
    scores: dict[str, float], decision: str, domain: str
) -> None:
    verdict = verdict_for(full_stages(FakeCaptioner(), FakeClassifier(canned(scores))))

    assert verdict.decision == decision
    assert ("classifier", "score", domain) in [(r.stage, r.rule, r.subject) for r in verdict.reasons]


def test_a_caption_keyword_sends_the_image_to_review() -> None:
    verdict = verdict_for(full_stages(FakeCaptioner("a topless mannequin"), FakeClassifier(canned())))

    assert verdict.decision == "review"
    assert [(r.stage, r.rule, r.subject) for r in verdict.reasons] == [("caption", "keyword", "topless")]


@pytest.mark.parametrize(
    "answer",
    [
        '{"domains": {"sexual": {"score": 0.1, "reason": "x"}}, "category": "safe"}',  # domains missing
        canned({"violence": 1.7}),  # out of range
        '{"domains": {',  # cut short (a slow answer)
        "I cannot help with that.",  # not JSON at all
    ],
)
def test_a_malformed_answer_is_a_review_with_the_reason_never_an_item_failure(answer: str) -> None:
    verdict = verdict_for(full_stages(FakeCaptioner(), FakeClassifier(answer)))

    classifier = verdict.stages["classifier"]
    assert classifier.status == "failed" and (classifier.error or "").startswith("malformed answer")
    assert classifier.raw_answer == answer  # kept for whoever reviews it
    assert verdict.decision == "review"
    (reason,) = [r for r in verdict.reasons if r.stage == "classifier"]
    assert reason.rule == "failed" and "malformed answer" in reason.message


def test_a_caption_that_fails_is_a_review_and_the_classifier_still_reads_the_detections() -> None:
    classifier = FakeClassifier(canned())
    verdict = verdict_for(full_stages(FakeCaptioner(fail=True), classifier))

    assert verdict.stages["caption"].status == "failed"
    assert "CUDA out of memory" in (verdict.stages["caption"].error or "")
    assert classifier.seen[0][0] is None and classifier.seen[0][1]
    assert verdict.decision == "review"
    assert ("caption", "failed") in [(r.stage, r.rule) for r in verdict.reasons]


def test_models_that_are_not_pulled_are_missing_with_the_reason_and_loaded_only_once() -> None:
    stages = full_stages(None, None)
    verdict = verdict_for(stages)
    again = stages.run("full", IMAGE)

    assert verdict.stages["caption"].status == "missing" and "florence is not pulled" in (
        verdict.stages["caption"].error or ""
    )
    assert verdict.stages["classifier"].status == "missing"
    assert again.stages["classifier"].error == verdict.stages["classifier"].error
    assert verdict.decision == "review"


# --- options and the options hash ------------------------------------------------------------------------


def test_workflow_full_is_the_level_full_however_it_is_asked_for() -> None:
    by_workflow = make_options(workflow="full")
    by_level = make_options(safety="full")
    with_light = make_options(workflow="full", safety="light")

    assert by_workflow == by_level == with_light
    assert (by_workflow.safety, by_workflow.workflow) == ("full", "full")


def test_attributes_are_known_sorted_and_only_for_a_full_job() -> None:
    assert make_options(workflow="full", attributes="material, colors").attributes == ("colors", "material")
    with pytest.raises(InvalidOptions, match="unknown catalog attribute"):
        make_options(workflow="full", attributes=["price"])
    with pytest.raises(InvalidOptions, match="needs --workflow full"):
        make_options(safety="light", attributes=["colors"])


def test_the_caption_and_classifier_pins_are_part_of_the_options_hash() -> None:
    policy = load_policy()
    settings = Settings()
    pins = settings.safety.hub_pins()
    other = {**pins, "classifier": pins["classifier"].replace("@9", "@8")}
    options = make_options(workflow="full")

    def digest(hub: dict[str, str]) -> str:
        return options_hash(options, "ck", safety_fingerprint("full", policy, hub_pins=hub))

    assert digest(pins) == digest(dict(pins)) and digest(pins) != digest(other)
    assert "florence-community/Florence-2-large@" in pins["caption"]
    # A light job's fingerprint does not depend on the Hub pins
    assert safety_fingerprint("light", policy, hub_pins=pins) == safety_fingerprint("light", policy)
    # Catalog attributes change what the verdict holds: they are in the hash too
    with_attributes = make_options(workflow="full", attributes=["colors"])
    assert options_hash(with_attributes, "ck", "fp") != options_hash(options, "ck", "fp")


def test_a_hub_pin_must_be_a_commit() -> None:
    with pytest.raises(ValueError, match="40-character commit"):
        Settings(safety={"caption_model": {"repo": "a/b", "revision": "main"}})  # type: ignore[arg-type]


def test_a_policy_that_scores_a_domain_the_classifier_does_not_know_is_refused() -> None:
    from cutout_fleet.safety.policy import parse_policy

    with pytest.raises(ConfigError, match="scores no 'hate'; its domains are sexual"):
        parse_policy('version = "t"\n[stages.classifier.scores]\nhate = { review = 0.5 }\n', "test")
    # The built-in policy scores every domain the classifier gives
    assert set(load_policy().stage("classifier").scores) == set(SAFETY_DOMAINS)
