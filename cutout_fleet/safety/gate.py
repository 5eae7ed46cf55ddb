"""The gate: stage results + policy -> `allow` / `review` / `block`, with every reason that led there.

Pure: no I/O, no model.  Each rule that fires adds a reason; the strictest reason decides, and an image
that no rule touches is allowed.  A stage the level asked for that did not run (`missing`) or raised
(`failed`) is a reason too, decided by the policy (default `review`): no evidence is never `allow`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from cutout_fleet.safety.levels import STAGE_NAMES
from cutout_fleet.safety.policy import GatePolicy, StagePolicy
from cutout_fleet.safety.verdict import DECISION_RANK, Decision, Reason, StageResult, StageStatus


@dataclass(frozen=True)
class GateResult:
    decision: Decision
    reasons: tuple[Reason, ...]


def decide(policy: GatePolicy, stages: Mapping[str, StageResult]) -> GateResult:
    """The decision for one image from its stages' results (skipped stages count for nothing)."""
    reasons: list[Reason] = []
    for name in _stage_order(stages):
        reasons.extend(_stage_reasons(policy, name, stages[name]))
    decision: Decision = max(
        (reason.decision for reason in reasons), key=DECISION_RANK.__getitem__, default="allow"
    )
    return GateResult(decision, tuple(reasons))


def _stage_order(stages: Mapping[str, StageResult]) -> list[str]:
    known = [name for name in STAGE_NAMES if name in stages]
    return known + sorted(name for name in stages if name not in STAGE_NAMES)


def _stage_reasons(policy: GatePolicy, name: str, stage: StageResult) -> list[Reason]:
    if stage.status is StageStatus.SKIPPED:
        return []
    if stage.status is StageStatus.MISSING:
        decision = policy.on_missing_for(name)
        why = stage.error or "no result"
        return [Reason(decision=decision, stage=name, rule="missing", message=f"{name} did not run: {why}")]
    if stage.status is StageStatus.FAILED:
        decision = policy.on_failed_for(name)
        why = stage.error or "no error message"
        return [Reason(decision=decision, stage=name, rule="failed", message=f"{name} failed: {why}")]
    rules = policy.stage(name)
    return [
        *_label_reasons(name, rules, stage),
        *_score_reasons(policy, name, rules, stage),
        *_keyword_reasons(policy, name, rules, stage),
    ]


def _label_reasons(name: str, rules: StagePolicy, stage: StageResult) -> list[Reason]:
    reasons = []
    for found in stage.detections:
        thresholds = rules.labels.get(found.label)
        hit = thresholds.decision(found.score) if thresholds else None
        if hit is None:
            continue
        decision, threshold = hit
        reasons.append(
            Reason(
                decision=decision,
                stage=name,
                rule="label",
                subject=found.label,
                score=found.score,
                threshold=threshold,
                message=(
                    f"{name} found {found.label} at {found.score:.3f} (box {list(found.box)}), "
                    f"at or above the {decision} threshold {threshold}"
                ),
            )
        )
    return reasons


def _score_reasons(policy: GatePolicy, name: str, rules: StagePolicy, stage: StageResult) -> list[Reason]:
    reasons = []
    for domain, thresholds in sorted(rules.scores.items()):
        score = stage.scores.get(domain)
        if score is None:
            # The policy relies on a score the stage did not give: that evidence is missing.
            reasons.append(
                Reason(
                    decision=policy.on_missing_for(name),
                    stage=name,
                    rule="missing",
                    subject=domain,
                    message=f"{name} gave no score for {domain!r}, which the policy checks",
                )
            )
            continue
        hit = thresholds.decision(score)
        if hit is None:
            continue
        decision, threshold = hit
        reasons.append(
            Reason(
                decision=decision,
                stage=name,
                rule="score",
                subject=domain,
                score=score,
                threshold=threshold,
                message=(
                    f"{name} scored {domain!r} {score:.3f}, at or above the {decision} threshold {threshold}"
                ),
            )
        )
    return reasons


def _keyword_reasons(policy: GatePolicy, name: str, rules: StagePolicy, stage: StageResult) -> list[Reason]:
    if not rules.keywords:
        return []
    if stage.text is None:
        return [
            Reason(
                decision=policy.on_missing_for(name),
                stage=name,
                rule="missing",
                message=f"{name} gave no text, which the policy's keywords check",
            )
        ]
    reasons = []
    lists: tuple[tuple[Decision, tuple[str, ...]], ...] = (
        ("block", rules.keywords.block),
        ("review", rules.keywords.review),
    )
    for decision, words in lists:
        for word in words:
            if re.search(rf"(?<!\w){re.escape(word)}(?!\w)", stage.text, re.IGNORECASE):
                reasons.append(
                    Reason(
                        decision=decision,
                        stage=name,
                        rule="keyword",
                        subject=word,
                        message=f"{name} text contains {word!r}, a {decision} keyword",
                    )
                )
    return reasons
