"""The gate's decision table: stage results + policy -> allow / review / block, with every reason.

Each row is one branch of `cutout_fleet.safety.gate`: a stage's status (ok, skipped, missing, failed),
each kind of rule (detector labels, classifier domain scores, caption keywords) on both sides of its
thresholds, the policy's defaults and a stage's own overrides, and the strictest-wins rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cutout_fleet.safety import (
    Detection,
    GatePolicy,
    StageResult,
    StageStatus,
    decide,
    parse_policy,
)

POLICY = parse_policy(
    """
    version = "test-1"

    [stages.nudenet.labels]
    FEMALE_BREAST_EXPOSED = { review = 0.3, block = 0.5 }
    BUTTOCKS_COVERED = { review = 0.6 }
    ANUS_EXPOSED = { block = 0.4 }

    [stages.classifier]
    on_failed = "block"
    scores = { sexual = { review = 0.4, block = 0.8 }, minors = { block = 0.3 } }

    [stages.caption]
    on_missing = "allow"
    keywords = { review = ["lingerie"], block = ["explicit"] }
    """,
    "test policy",
)
STRICT_MISSING = parse_policy('version = "strict"\non_missing = "block"\non_failed = "block"', "strict")
ALLOW_MISSING = parse_policy('version = "lax"\non_missing = "allow"\non_failed = "allow"', "lax")
NO_RULES = parse_policy('version = "empty"', "empty")

BOX = (10, 20, 30, 40)


def nudenet(*found: tuple[str, float]) -> StageResult:
    detections = tuple(Detection(label=label, score=score, box=BOX) for label, score in found)
    return StageResult(status=StageStatus.OK, model="nudenet-320n", detections=detections)


def classifier(**scores: float) -> StageResult:
    return StageResult(status=StageStatus.OK, model="classifier", scores=scores)


def caption(text: str | None) -> StageResult:
    return StageResult(status=StageStatus.OK, model="captioner", text=text)


MISSING = StageResult.missing("not installed")
FAILED = StageResult.failed("RuntimeError: boom")
SKIPPED = StageResult.skipped()
ALL_SCORES = {"sexual": 0.0, "minors": 0.0}

# (decision, stage, rule, subject) of every reason, in order.
Why = tuple[str, str, str, str | None]


@dataclass(frozen=True)
class Row:
    name: str
    stages: dict[str, StageResult]
    decision: str
    reasons: tuple[Why, ...]
    policy: GatePolicy = POLICY


TABLE = [
    # --- nothing to weigh ---------------------------------------------------------------------------------
    Row("no stages at all is allow", {}, "allow", ()),
    Row("nudenet finds nothing: allow", {"nudenet": nudenet()}, "allow", ()),
    Row(
        "skipped stages count for nothing",
        {"nudenet": nudenet(), "caption": SKIPPED, "classifier": SKIPPED},
        "allow",
        (),
    ),
    Row(
        "a label the policy does not list is ignored",
        {"nudenet": nudenet(("FACE_FEMALE", 0.99))},
        "allow",
        (),
    ),
    Row(
        "an ok stage the policy has no rules for is allow",
        {"nudenet": nudenet(("ANUS_EXPOSED", 0.9))},
        "allow",
        (),
        NO_RULES,
    ),
    # --- detector labels ------------------------------------------------------------------------------------
    Row(
        "below the review threshold: ignored",
        {"nudenet": nudenet(("FEMALE_BREAST_EXPOSED", 0.29))},
        "allow",
        (),
    ),
    Row(
        "at the review threshold: review",
        {"nudenet": nudenet(("FEMALE_BREAST_EXPOSED", 0.3))},
        "review",
        (("review", "nudenet", "label", "FEMALE_BREAST_EXPOSED"),),
    ),
    Row(
        "between review and block: review",
        {"nudenet": nudenet(("FEMALE_BREAST_EXPOSED", 0.49))},
        "review",
        (("review", "nudenet", "label", "FEMALE_BREAST_EXPOSED"),),
    ),
    Row(
        "at the block threshold: block",
        {"nudenet": nudenet(("FEMALE_BREAST_EXPOSED", 0.5))},
        "block",
        (("block", "nudenet", "label", "FEMALE_BREAST_EXPOSED"),),
    ),
    Row(
        "a review-only label never blocks",
        {"nudenet": nudenet(("BUTTOCKS_COVERED", 0.99))},
        "review",
        (("review", "nudenet", "label", "BUTTOCKS_COVERED"),),
    ),
    Row(
        "a review-only label below its threshold is ignored",
        {"nudenet": nudenet(("BUTTOCKS_COVERED", 0.59))},
        "allow",
        (),
    ),
    Row(
        "a block-only label blocks at its threshold",
        {"nudenet": nudenet(("ANUS_EXPOSED", 0.4))},
        "block",
        (("block", "nudenet", "label", "ANUS_EXPOSED"),),
    ),
    Row(
        "a block-only label below its threshold is ignored",
        {"nudenet": nudenet(("ANUS_EXPOSED", 0.39))},
        "allow",
        (),
    ),
    Row(
        "every detection over a threshold is a reason",
        {"nudenet": nudenet(("BUTTOCKS_COVERED", 0.7), ("FACE_MALE", 0.9), ("BUTTOCKS_COVERED", 0.65))},
        "review",
        (
            ("review", "nudenet", "label", "BUTTOCKS_COVERED"),
            ("review", "nudenet", "label", "BUTTOCKS_COVERED"),
        ),
    ),
    # --- missing and failed stages ----------------------------------------------------------------------
    Row(
        "a missing stage is review by default",
        {"nudenet": MISSING},
        "review",
        (("review", "nudenet", "missing", None),),
    ),
    Row(
        "a failed stage is review by default",
        {"nudenet": FAILED},
        "review",
        (("review", "nudenet", "failed", None),),
    ),
    Row(
        "the policy's default for missing decides",
        {"nudenet": MISSING},
        "block",
        (("block", "nudenet", "missing", None),),
        STRICT_MISSING,
    ),
    Row(
        "the policy's default for failed decides",
        {"nudenet": FAILED},
        "block",
        (("block", "nudenet", "failed", None),),
        STRICT_MISSING,
    ),
    Row(
        "a policy may allow a missing stage, and the reason is still recorded",
        {"nudenet": MISSING},
        "allow",
        (("allow", "nudenet", "missing", None),),
        ALLOW_MISSING,
    ),
    Row(
        "a stage's own on_failed overrides the default",
        {"classifier": FAILED},
        "block",
        (("block", "classifier", "failed", None),),
    ),
    Row(
        "a stage's own on_missing overrides the default",
        {"caption": MISSING},
        "allow",
        (("allow", "caption", "missing", None),),
    ),
    Row(
        "a stage without its own on_failed takes the default",
        {"caption": FAILED},
        "review",
        (("review", "caption", "failed", None),),
    ),
    # --- classifier domain scores (a later stage) -------------------------------------------------------
    Row(
        "domain scores below their thresholds: allow",
        {"classifier": classifier(sexual=0.39, minors=0.29)},
        "allow",
        (),
    ),
    Row(
        "a domain score at review",
        {"classifier": classifier(sexual=0.4, minors=0.0)},
        "review",
        (("review", "classifier", "score", "sexual"),),
    ),
    Row(
        "a domain score at block",
        {"classifier": classifier(sexual=0.8, minors=0.0)},
        "block",
        (("block", "classifier", "score", "sexual"),),
    ),
    Row(
        "a block-only domain blocks",
        {"classifier": classifier(sexual=0.0, minors=0.3)},
        "block",
        (("block", "classifier", "score", "minors"),),
    ),
    Row(
        "a domain the policy checks but the stage did not score is missing evidence",
        {"classifier": classifier(sexual=0.0)},
        "review",
        (("review", "classifier", "missing", "minors"),),
    ),
    Row(
        "domains the policy does not list are ignored",
        {"classifier": classifier(violence=1.0, **ALL_SCORES)},
        "allow",
        (),
    ),
    # --- caption keywords (a later stage) ---------------------------------------------------------------
    Row("a caption without keywords: allow", {"caption": caption("a red shoe on white")}, "allow", ()),
    Row(
        "a review keyword, any case",
        {"caption": caption("Black LINGERIE set")},
        "review",
        (("review", "caption", "keyword", "lingerie"),),
    ),
    Row(
        "a block keyword",
        {"caption": caption("an explicit photo")},
        "block",
        (("block", "caption", "keyword", "explicit"),),
    ),
    Row("keywords match whole words only", {"caption": caption("inexplicitly lingeries")}, "allow", ()),
    Row(
        "a caption stage that gave no text is missing evidence (its own on_missing)",
        {"caption": caption(None)},
        "allow",
        (("allow", "caption", "missing", None),),
    ),
    # --- strictest wins, every reason listed ------------------------------------------------------------
    Row(
        "block beats review, and both reasons are listed",
        {"nudenet": nudenet(("BUTTOCKS_COVERED", 0.7), ("FEMALE_BREAST_EXPOSED", 0.9))},
        "block",
        (
            ("review", "nudenet", "label", "BUTTOCKS_COVERED"),
            ("block", "nudenet", "label", "FEMALE_BREAST_EXPOSED"),
        ),
    ),
    Row(
        "a later stage's block beats an earlier review, reasons in stage order",
        {"classifier": classifier(sexual=0.9, minors=0.0), "nudenet": nudenet(("BUTTOCKS_COVERED", 0.7))},
        "block",
        (("review", "nudenet", "label", "BUTTOCKS_COVERED"), ("block", "classifier", "score", "sexual")),
    ),
    Row(
        "a missing stage's review beats another stage's allow",
        {"nudenet": nudenet(), "classifier": MISSING},
        "review",
        (("review", "classifier", "missing", None),),
    ),
    Row(
        "a failed stage cannot hide another stage's block",
        {"nudenet": nudenet(("ANUS_EXPOSED", 0.95)), "caption": FAILED},
        "block",
        (("block", "nudenet", "label", "ANUS_EXPOSED"), ("review", "caption", "failed", None)),
    ),
    Row(
        "an unknown stage is weighed after the known ones",
        {"zzz-future": MISSING, "nudenet": FAILED},
        "review",
        (("review", "nudenet", "failed", None), ("review", "zzz-future", "missing", None)),
    ),
]


@pytest.mark.parametrize("row", TABLE, ids=[row.name for row in TABLE])
def test_decision_table(row: Row) -> None:
    # Given the stage results of one image
    # When the gate weighs them under the row's policy
    result = decide(row.policy, row.stages)

    # Then the decision is the row's, and so is every reason, in order
    assert result.decision == row.decision
    assert tuple((r.decision, r.stage, r.rule, r.subject) for r in result.reasons) == row.reasons


def test_a_label_reason_carries_the_score_the_threshold_and_the_box() -> None:
    result = decide(POLICY, {"nudenet": nudenet(("FEMALE_BREAST_EXPOSED", 0.625))})

    (reason,) = result.reasons
    assert (reason.score, reason.threshold) == (0.625, 0.5)
    assert (
        "FEMALE_BREAST_EXPOSED" in reason.message
        and "0.625" in reason.message
        and "[10, 20, 30, 40]" in reason.message
    )


def test_a_missing_or_failed_reason_says_why() -> None:
    result = decide(POLICY, {"nudenet": MISSING, "caption": FAILED})

    messages = [reason.message for reason in result.reasons]
    assert messages == ["nudenet did not run: not installed", "caption failed: RuntimeError: boom"]
