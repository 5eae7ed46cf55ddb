"""The safety part of the options hash: an output checked under other rules or models is not up to date."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from cutout_fleet.safety.levels import HUB_STAGES, NO_SAFETY, level_models, level_stages
from cutout_fleet.safety.policy import GatePolicy

# Bump only if what the fingerprint covers changes meaning.
FINGERPRINT_VERSION = "s1"


def safety_fingerprint(
    level: str,
    policy: GatePolicy,
    model_checksums: Mapping[str, str] | None = None,
    hub_pins: Mapping[str, str] | None = None,
) -> str | None:
    """A digest of the level, the policy (version and rules), every safety model's checksum (model
    id -> sha256; default: the level's pinned models) and, for a level with a caption or classifier,
    their Hub pins (stage -> `repo@revision[/file]`, `SafetySettings.hub_pins()`).  None for level
    `none`, so that the options hash of a job without safety stays what it was."""
    if level == NO_SAFETY:
        return None
    checksums = (
        dict(model_checksums)
        if model_checksums is not None
        else {model.id: model.sha256 for model in level_models(level)}
    )
    content: dict[str, object] = {
        "level": level,
        "policy_version": policy.version,
        "policy_digest": policy.digest(),
        "models": checksums,
    }
    hub_stages = [stage for stage in level_stages(level) if stage in HUB_STAGES]
    if hub_stages:
        # Only a level that runs them: light's fingerprints stay what they were.
        pins = dict(hub_pins or {})
        content["hub"] = {stage: pins.get(stage, "") for stage in hub_stages}
    canonical = json.dumps(
        content,
        sort_keys=True,
        separators=(",", ":"),
    )
    return f"{FINGERPRINT_VERSION}-{hashlib.sha256(canonical.encode('utf-8')).hexdigest()[:32]}"
