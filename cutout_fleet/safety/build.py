"""Putting a verdict together: fill every stage's slot, run the gate, time it."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from cutout_fleet.safety.gate import decide
from cutout_fleet.safety.levels import LEVEL_STAGES, STAGE_NAMES
from cutout_fleet.safety.policy import GatePolicy
from cutout_fleet.safety.verdict import ModelRef, SourceRef, StageResult, Verdict

MS_PER_S = 1000.0


def fill_stages(level: str, stages: Mapping[str, StageResult]) -> dict[str, StageResult]:
    """Every stage's slot: the results given, `missing` for a stage `level` asks for but has no result,
    `skipped` for the rest.  A level this code does not know (a newer producer's) asks for every stage:
    no evidence is never an `allow`."""
    known = level in LEVEL_STAGES
    wanted = LEVEL_STAGES.get(level, STAGE_NAMES)
    filled: dict[str, StageResult] = {}
    for name in (*STAGE_NAMES, *sorted(set(stages) - set(STAGE_NAMES))):
        if name in stages:
            filled[name] = stages[name]
        elif name in wanted:
            why = (
                f"no {name} result on this worker"
                if known
                else f"this worker does not know safety level {level!r}"
            )
            filled[name] = StageResult.missing(why)
        else:
            filled[name] = StageResult.skipped()
    return filled


def build_verdict(
    *,
    level: str,
    policy: GatePolicy,
    source: SourceRef,
    stages: Mapping[str, StageResult],
    models: Sequence[ModelRef] = (),
    output_key: str | None = None,
    timings_ms: Mapping[str, float] | None = None,
) -> Verdict:
    """The verdict for one image: `stages` as the worker ran them (absent ones are filled in), the
    gate's decision under `policy`, and `timings_ms` plus the gate's own time."""
    filled = fill_stages(level, stages)
    started = time.perf_counter()
    result = decide(policy, filled)
    timings = dict(timings_ms or {})
    timings["gate"] = (time.perf_counter() - started) * MS_PER_S
    return Verdict(
        level=level,
        source=source,
        output_key=output_key,
        models=tuple(models),
        stages=filled,
        decision=result.decision,
        reasons=result.reasons,
        policy_version=policy.version,
        policy_digest=policy.digest(),
        timings_ms=timings,
    )
