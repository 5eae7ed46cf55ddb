"""With a safety level: the verdict JSON, and what its decision does with the cutout.

The gate (cutout_fleet.safety) decides allow / review / block; the job's options say what `block`
(`on_block`: drop, quarantine, write) and `review` (`on_review`: quarantine, write) do.  `quarantine`
writes the cutout under OUT/<quarantine prefix>/ with the same relative key, so a reviewer can publish it
by moving it.  The verdict goes beside the planned output key (`<stem>.verdict.json`), last, with the
output's freshness metadata: it is the "up to date" marker of the item, so a dropped cutout is not made
again on a re-run, and an item cut short before its verdict is redone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cutout_fleet.errors import PermanentError
from cutout_fleet.freshness import made_from
from cutout_fleet.items import ItemRef
from cutout_fleet.keys import join_key, mask_key, relative_key
from cutout_fleet.safety import GatePolicy, SourceRef, build_verdict, load_policy, read_verdict, verdict_key
from cutout_fleet.storage import Storage
from cutout_fleet.worker.conditional_write import put_checked
from cutout_fleet.worker.outputs import OutputData, put_outputs
from cutout_fleet.worker.safety.stages import StageRun

VERDICT_CONTENT_TYPE = "application/json"
# A verdict is a few KB; one this large is not ours.
VERDICT_MAX_BYTES = 1024 * 1024


@lru_cache(maxsize=4)
def gate_policy(path: Path | None) -> GatePolicy:
    """The gate's policy (CUTOUT_SAFETY__POLICY_FILE, else the built-in one), read once per process."""
    return load_policy(path)


@dataclass(frozen=True)
class Written:
    """Where one item's verdict and cutout went, and the decision that sent them there."""

    verdict_key: str
    decision: str
    cutout_key: str | None  # None: dropped (the decision's action was `drop`)


@dataclass(frozen=True)
class SafetyContext:
    """What every item of a task with a safety level shares."""

    level: str
    policy: GatePolicy
    on_block: str
    on_review: str
    out_prefix: str
    quarantine_prefix: str
    # The stages, run on the decoded source in this process; None when a cutter runs them with the cutout.
    inspect: Callable[..., StageRun] | None = None  # (image, *, caption=None): see pipeline.Inspector

    def verdict_key(self, output_key: str) -> str:
        return verdict_key(output_key)

    def destination(self, decision: str, output_key: str) -> str | None:
        """Where the cutout goes for this decision: the output key, its quarantine key, or nowhere."""
        action = {"allow": "write", "review": self.on_review, "block": self.on_block}[decision]
        if action == "write":
            return output_key
        if action == "quarantine":
            rest = relative_key(output_key, self.out_prefix)
            return join_key(self.out_prefix, f"{self.quarantine_prefix}/{rest}")
        return None

    def recorded(self, out: Storage, output_key: str) -> Written | None:
        """What the verdict of an up-to-date item says (a skipped item keeps its decision in the report)."""
        key = self.verdict_key(output_key)
        try:
            verdict = read_verdict(out.get(key, max_bytes=VERDICT_MAX_BYTES).data)
        except (PermanentError, ValueError):
            return None  # unreadable: the item is still up to date, its decision just is not reported
        return Written(key, verdict.decision, verdict.output_key)


def _withdraw_earlier_cutout(out: Storage, output_key: str, source_key: str, with_mask: bool) -> None:
    """Delete the cutout (and its mask) an earlier run published at the planned key from this source
    (say, before the policy changed), which this decision does not allow there.  Only our own output of
    the same source: its metadata says so (a folder keeps no metadata, so nothing is deleted there)."""
    for key in (output_key, mask_key(output_key)) if with_mask else (output_key,):
        if made_from(out.head_metadata(key), source_key):
            out.delete(key)


def write_with_verdict(
    safety: SafetyContext,
    out: Storage,
    item: ItemRef,
    output_key: str,
    cutout: OutputData,
    run: StageRun,
    metadata: dict[str, str],
    seen_verdict: dict[str, str] | None,
    source_etag: str,
    options_hash: str,
    timings_ms: dict[str, float],
) -> Written:
    """Decide, put the cutout where the decision sends it, then write the verdict (the marker)."""
    verdict = build_verdict(
        level=safety.level,
        policy=safety.policy,
        source=SourceRef(bucket=item.bucket, key=item.key, etag=source_etag, version_id=item.version),
        stages=run.stages,
        models=run.models,
        timings_ms={**timings_ms, **run.timings_ms},
    )
    destination = safety.destination(verdict.decision, output_key)
    verdict = verdict.model_copy(update={"output_key": destination})
    if destination is not None:
        put_outputs(
            out,
            destination,
            cutout,
            metadata=metadata,
            seen=out.head_metadata(destination),
            source_etag=source_etag,
            options_hash=options_hash,
        )
    if destination != output_key:
        _withdraw_earlier_cutout(out, output_key, item.key, cutout.mask is not None)
    key = safety.verdict_key(output_key)
    put_checked(
        out,
        key,
        verdict.to_json(),
        content_type=VERDICT_CONTENT_TYPE,
        metadata=metadata,
        seen=seen_verdict,
        source_etag=source_etag,
        options_hash=options_hash,
    )
    return Written(key, verdict.decision, destination)
