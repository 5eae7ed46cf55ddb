"""Safety verdicts, pure: the verdict format, the gate's policy, the gate, and the options-hash part.

The worker runs the stages (cutout_fleet.worker.safety) and hands their results to `build_verdict`;
the producer reads `levels` to refuse a level no live worker can run.  Nothing here loads a model.
"""

from cutout_fleet.safety.build import build_verdict, fill_stages
from cutout_fleet.safety.fingerprint import safety_fingerprint
from cutout_fleet.safety.gate import GateResult, decide
from cutout_fleet.safety.levels import (
    LEVEL_EXTRAS,
    LEVEL_STAGES,
    NO_SAFETY,
    SAFETY_LEVELS,
    STAGE_MODELS,
    STAGE_NAMES,
    SafetyLevel,
    SafetyModel,
    level_models,
    level_stages,
    parse_level,
)
from cutout_fleet.safety.policy import GatePolicy, load_policy, parse_policy
from cutout_fleet.safety.verdict import (
    VERDICT_SUFFIX,
    VERDICT_VERSION,
    Decision,
    Detection,
    ModelRef,
    Reason,
    SourceRef,
    StageResult,
    StageStatus,
    Verdict,
    read_verdict,
    verdict_key,
)

__all__ = [
    "LEVEL_EXTRAS",
    "LEVEL_STAGES",
    "NO_SAFETY",
    "SAFETY_LEVELS",
    "STAGE_MODELS",
    "STAGE_NAMES",
    "VERDICT_SUFFIX",
    "VERDICT_VERSION",
    "Decision",
    "Detection",
    "GatePolicy",
    "GateResult",
    "ModelRef",
    "Reason",
    "SafetyLevel",
    "SafetyModel",
    "SourceRef",
    "StageResult",
    "StageStatus",
    "Verdict",
    "build_verdict",
    "decide",
    "fill_stages",
    "level_models",
    "level_stages",
    "load_policy",
    "parse_level",
    "parse_policy",
    "read_verdict",
    "safety_fingerprint",
    "verdict_key",
]
