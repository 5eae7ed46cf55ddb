"""The verdict file and the safety part of the options hash."""

from __future__ import annotations

import json

import pytest

from cutout_fleet.errors import InvalidOptions
from cutout_fleet.safety import (
    STAGE_MODELS,
    VERDICT_VERSION,
    Detection,
    ModelRef,
    SourceRef,
    StageResult,
    StageStatus,
    build_verdict,
    load_policy,
    parse_level,
    parse_policy,
    read_verdict,
    safety_fingerprint,
    verdict_key,
)

SOURCE = SourceRef(bucket="catalog", key="shoes/a.jpg", etag="0123abcd")
NUDENET_MODEL = ModelRef(
    stage="nudenet",
    id="nudenet-320n",
    revision="3.4.2",
    sha256="ab" * 32,
    providers=("CPUExecutionProvider",),
)
FACE = Detection(label="FACE_FEMALE", score=0.72, box=(173, 82, 102, 98))
EXPOSED = Detection(label="FEMALE_BREAST_EXPOSED", score=0.91, box=(1, 2, 3, 4))


def nudenet(*found: Detection) -> StageResult:
    return StageResult(
        status=StageStatus.OK, model="nudenet-320n", detections=found, timings_ms={"inference": 12.5}
    )


def light_verdict(*found: Detection) -> dict[str, object]:
    verdict = build_verdict(
        level="light",
        policy=load_policy(),
        source=SOURCE,
        output_key="out/shoes/a.png",
        stages={"nudenet": nudenet(*found)},
        models=[NUDENET_MODEL],
        timings_ms={"nudenet": 20.0},
    )
    return dict(json.loads(verdict.to_json()))


def test_the_verdict_sits_beside_the_output_with_the_same_stem() -> None:
    assert verdict_key("out/shoes/a.png") == "out/shoes/a.verdict.json"
    assert verdict_key("out/shoes/a.b.webp") == "out/shoes/a.b.verdict.json"
    assert verdict_key("a.png") == "a.verdict.json"


def test_a_verdict_holds_everything_the_issue_lists() -> None:
    # Given NudeNet found a face on a source image, under the built-in policy
    data = light_verdict(FACE)

    # Then the file is versioned and names the source, the models, the detections, every stage's slot,
    # the decision, the policy and the timings
    assert data["version"] == VERDICT_VERSION and data["level"] == "light"
    assert data["source"] == {
        "bucket": "catalog",
        "key": "shoes/a.jpg",
        "etag": "0123abcd",
        "version_id": None,
    }
    assert data["output_key"] == "out/shoes/a.png"
    assert data["models"] == [
        {
            "stage": "nudenet",
            "id": "nudenet-320n",
            "revision": "3.4.2",
            "sha256": "ab" * 32,
            "providers": ["CPUExecutionProvider"],
        }
    ]
    assert data["detections"] == [
        {"stage": "nudenet", "label": "FACE_FEMALE", "score": 0.72, "box": [173, 82, 102, 98]}
    ]
    stages = data["stages"]
    assert isinstance(stages, dict) and list(stages) == ["nudenet", "caption", "classifier"]
    assert stages["nudenet"]["status"] == "ok" and stages["nudenet"]["timings_ms"] == {"inference": 12.5}
    assert stages["caption"]["status"] == "skipped" and stages["classifier"]["status"] == "skipped"
    assert data["decision"] == "allow" and data["reasons"] == []
    assert data["policy_version"] == load_policy().version
    assert data["policy_digest"] == load_policy().digest()
    timings = data["timings_ms"]
    assert isinstance(timings, dict) and timings["nudenet"] == 20.0 and timings["gate"] >= 0


def test_a_blocked_verdict_lists_its_reasons() -> None:
    data = light_verdict(FACE, EXPOSED)

    assert data["decision"] == "block"
    reasons = data["reasons"]
    assert isinstance(reasons, list) and [r["subject"] for r in reasons] == ["FEMALE_BREAST_EXPOSED"]
    assert reasons[0]["score"] == 0.91 and reasons[0]["threshold"] == 0.5


def test_a_stage_the_level_asks_for_without_a_result_is_missing_and_reviewed() -> None:
    verdict = build_verdict(level="light", policy=load_policy(), source=SOURCE, stages={})

    assert verdict.stages["nudenet"].status is StageStatus.MISSING
    assert verdict.decision == "review"
    assert [r.rule for r in verdict.reasons] == ["missing"]


def test_a_level_this_worker_does_not_know_is_never_allowed_for_want_of_evidence() -> None:
    verdict = build_verdict(
        level="heavier", policy=load_policy(), source=SOURCE, stages={"nudenet": nudenet()}
    )

    assert verdict.stages["caption"].status is StageStatus.MISSING
    assert "does not know safety level 'heavier'" in (verdict.stages["classifier"].error or "")
    assert verdict.decision == "review"


def test_level_none_has_every_slot_skipped_and_allows() -> None:
    verdict = build_verdict(level="none", policy=load_policy(), source=SOURCE, stages={})

    assert {name: stage.status for name, stage in verdict.stages.items()} == {
        "nudenet": StageStatus.SKIPPED,
        "caption": StageStatus.SKIPPED,
        "classifier": StageStatus.SKIPPED,
    }
    assert verdict.decision == "allow"


def test_a_later_stage_fills_its_slot_without_changing_the_verdict_or_the_gate() -> None:
    # Given a classifier result, as the next level's stage will give it
    classifier = StageResult(status=StageStatus.OK, model="llm", scores={"sexual": 0.9, "minors": 0.0})

    verdict = build_verdict(
        level="light",
        policy=load_policy(),
        source=SOURCE,
        stages={"nudenet": nudenet(), "classifier": classifier},
    )

    # Then the built-in policy's domain rules weigh it
    assert verdict.stages["classifier"].scores["sexual"] == 0.9
    assert verdict.decision == "block"
    assert ("block", "classifier", "score", "sexual") in [
        (r.decision, r.stage, r.rule, r.subject) for r in verdict.reasons
    ]


def test_a_verdict_reads_back_equal() -> None:
    verdict = build_verdict(
        level="light", policy=load_policy(), source=SOURCE, stages={"nudenet": nudenet(EXPOSED)}
    )

    assert read_verdict(verdict.to_json()) == verdict


def test_a_verdict_from_newer_code_is_refused_and_unknown_fields_are_ignored() -> None:
    verdict = build_verdict(level="light", policy=load_policy(), source=SOURCE, stages={"nudenet": nudenet()})
    data = json.loads(verdict.to_json())

    with pytest.raises(ValueError, match="newer"):
        read_verdict(json.dumps({**data, "version": VERDICT_VERSION + 1}))
    data["stages"]["nudenet"]["future_field"] = 1
    assert read_verdict(json.dumps({**data, "added_later": True})) == verdict


# --- The options-hash part --------------------------------------------------------------------------------


def test_no_safety_adds_nothing_to_the_options_hash() -> None:
    assert safety_fingerprint("none", load_policy()) is None


def test_the_fingerprint_is_stable() -> None:
    policy = load_policy()

    assert safety_fingerprint("light", policy) == safety_fingerprint("light", load_policy())
    assert (safety_fingerprint("light", policy) or "").startswith("s1-")


def test_the_fingerprint_changes_with_the_policy_version() -> None:
    one = parse_policy('version = "1"', "a")
    two = parse_policy('version = "2"', "b")

    assert safety_fingerprint("light", one) != safety_fingerprint("light", two)


def test_the_fingerprint_changes_with_a_rule_even_under_the_same_version() -> None:
    one = parse_policy('version = "1"\n[stages.nudenet.labels]\nANUS_EXPOSED = { block = 0.5 }', "a")
    two = parse_policy('version = "1"\n[stages.nudenet.labels]\nANUS_EXPOSED = { block = 0.4 }', "b")

    assert safety_fingerprint("light", one) != safety_fingerprint("light", two)


def test_the_fingerprint_changes_with_a_safety_model_checksum() -> None:
    policy = load_policy()
    pinned = {"nudenet-320n": STAGE_MODELS["nudenet"].sha256}

    assert safety_fingerprint("light", policy) == safety_fingerprint("light", policy, pinned)
    assert safety_fingerprint("light", policy) != safety_fingerprint(
        "light", policy, {"nudenet-320n": "0" * 64}
    )
    assert safety_fingerprint("light", policy) != safety_fingerprint(
        "light", policy, {**pinned, "caption": "1"}
    )


def test_the_fingerprint_changes_with_the_level() -> None:
    policy = load_policy()

    assert safety_fingerprint("light", policy) != safety_fingerprint("full", policy, {"nudenet-320n": "x"})
    assert safety_fingerprint("light", policy) != safety_fingerprint("other", policy)


def test_levels_are_parsed_strictly() -> None:
    assert parse_level("light") == "light" and parse_level("none") == "none"
    with pytest.raises(InvalidOptions, match="none, light"):
        parse_level("heavy")
