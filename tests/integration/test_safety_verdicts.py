"""`--safety light` end to end: NudeNet for real, the gate, the verdict JSON and each decision's consequence.

Through `cutout run` (folders) and through a real CPU worker with the S3 server.  A test policy makes the
decisions predictable on real photos: NudeNet finds FACE_FEMALE (score ~0.72) on astronaut.png and nothing
the policy names on chelsea.png (a cat).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cutout_fleet.safety import read_verdict
from tests.support.fleet import EXAMPLES_DIR, Fleet, FleetFactory, run_cli

pytestmark = pytest.mark.integration

MODEL = "tiny-u2netp"
PHOTOS = ("astronaut.png", "chelsea.png")


def policy_file(folder: Path, *, version: str, face: str, threshold: float = 0.5) -> Path:
    """A gate policy where a female face `face`s (block or review) at `threshold`; nothing else counts."""
    path = folder / f"policy-{version}-{face}-{threshold}.toml"
    rule = f"FACE_FEMALE = {{ {face} = {threshold} }}"
    path.write_text(f'version = "{version}"\n\n[stages.nudenet.labels]\n{rule}\n')
    return path


def photos(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        shutil.copy(EXAMPLES_DIR / name, folder / name)
    return folder


# --- cutout run --------------------------------------------------------------------------------------------


def run_local(fleet: Fleet, tmp_path: Path, policy: Path, *flags: str) -> Path:
    out = tmp_path / "out"
    env = fleet.env(CUTOUT_SAFETY__POLICY_FILE=str(policy))
    run_cli(fleet.cutout_bin, env, "run", str(photos(tmp_path / "in")), "--out", str(out), "--model", MODEL,
            "--safety", "light", *flags)  # fmt: skip
    return out


@pytest.fixture
def fleet(make_fleet: FleetFactory) -> Iterator[Fleet]:
    with make_fleet(models=[MODEL]) as fleet:
        yield fleet


@pytest.mark.parametrize(
    ("on_block", "cutout_at"),
    [("drop", None), ("quarantine", "_quarantine/astronaut.png"), ("write", "astronaut.png")],
)
def test_a_blocked_image_under_each_on_block(
    fleet: Fleet, tmp_path: Path, on_block: str, cutout_at: str | None
) -> None:
    # Given a policy that blocks a female face, and a run with this on-block action
    out = run_local(
        fleet, tmp_path, policy_file(tmp_path, version="t1", face="block"), "--on-block", on_block
    )

    # Then astronaut's verdict says block, with its reason and detection, and its cutout went where the
    # action sends it; the cat was allowed and written as usual
    verdict = read_verdict((out / "astronaut.verdict.json").read_bytes())
    assert verdict.decision == "block" and verdict.policy_version == "t1"
    assert [(r.stage, r.subject) for r in verdict.reasons] == [("nudenet", "FACE_FEMALE")]
    assert any(d.label == "FACE_FEMALE" for d in verdict.detections)
    cutouts = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert cutouts == sorted(["chelsea.png", *([cutout_at] if cutout_at else [])])
    assert read_verdict((out / "chelsea.verdict.json").read_bytes()).decision == "allow"


@pytest.mark.parametrize(
    ("on_review", "cutout_at"), [("quarantine", "_quarantine/astronaut.png"), ("write", "astronaut.png")]
)
def test_an_image_for_review_under_each_on_review(
    fleet: Fleet, tmp_path: Path, on_review: str, cutout_at: str
) -> None:
    out = run_local(
        fleet, tmp_path, policy_file(tmp_path, version="t1", face="review"), "--on-review", on_review
    )

    assert read_verdict((out / "astronaut.verdict.json").read_bytes()).decision == "review"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == sorted(
        ["chelsea.png", cutout_at]
    )
    (summary,) = (out / "_reports").glob("*.summary.json")
    assert json.loads(summary.read_text())["decisions"] == {"allow": 1, "review": 1}


@pytest.mark.parametrize(
    ("on_block", "kept"),
    [
        ("drop", []),
        ("quarantine", ["_quarantine/astronaut.jpg", "_quarantine/astronaut.mask.png"]),
    ],
)
def test_a_mask_beside_a_framed_cutout_follows_it_wherever_the_decision_sends_it(
    fleet: Fleet, tmp_path: Path, on_block: str, kept: list[str]
) -> None:
    # Given a policy that blocks a female face, and a marketplace job that writes masks too
    policy = policy_file(tmp_path, version="t1", face="block")
    framed = ["--preset", "marketplace-main", "--canvas", "600x600", "--output", "both"]
    out = run_local(fleet, tmp_path, policy, "--on-block", on_block, *framed)

    # Then the blocked astronaut's cutout and mask went together; the allowed cat's are both published
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.suffix in (".jpg", ".png"))
    assert written == sorted(["chelsea.jpg", "chelsea.mask.png", *kept])
    assert read_verdict((out / "astronaut.verdict.json").read_bytes()).decision == "block"


# --- the fleet ---------------------------------------------------------------------------------------------


def test_the_fleet_writes_verdicts_skips_what_is_up_to_date_and_recomputes_for_a_new_policy(
    fleet: Fleet, tmp_path: Path
) -> None:
    bucket = fleet.new_bucket("safety")
    fleet.upload(bucket, "in/", {name: (EXAMPLES_DIR / name).read_bytes() for name in PHOTOS})
    args = (f"s3://{bucket}/in/", "--out", f"s3://{bucket}/out", "--model", MODEL, "--safety", "light")

    def run_with(policy: Path) -> dict[str, Any]:
        """A worker (the only one) and the producer on `policy`; the job's final status."""
        for worker in list(fleet.workers):
            worker.stop()
            fleet.workers.remove(worker)
        env = fleet.env(CUTOUT_SAFETY__POLICY_FILE=str(policy))
        fleet.start_worker(env=env)
        return fleet.wait_for_job(fleet.enqueue(*args, env=env)["job_id"], check=True)

    def outputs() -> set[str]:
        return {o["Key"] for o in fleet.s3.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]}

    # Given a --safety light job on a CPU worker with NudeNet, under a policy that allows faces
    first = run_with(policy_file(tmp_path, version="t0", face="review", threshold=1.0))
    assert (first["succeeded"], first["decisions"]) == (2, {"allow": 2})
    assert {"out/astronaut.png", "out/chelsea.png"} <= outputs()

    # When a policy that blocks a female face comes (on-block: drop)
    second = run_with(policy_file(tmp_path, version="t1", face="block"))

    # Then every image has a verdict in S3; the blocked one's earlier cutout is withdrawn
    assert (second["succeeded"], second["decisions"]) == (2, {"allow": 1, "block": 1})
    astronaut = read_verdict(fleet.read(bucket, "out/astronaut.verdict.json"))
    assert (astronaut.decision, astronaut.output_key, astronaut.source.key) == (
        "block",
        None,
        "in/astronaut.png",
    )
    assert astronaut.source.etag and astronaut.models[0].id == "nudenet-320n"
    assert "out/chelsea.png" in outputs() and "out/astronaut.png" not in outputs()
    report = fleet.wait_for_object(bucket, f"out/_reports/{second['job_id']}.jsonl")  # written just after
    lines = {line["key"]: line for line in map(json.loads, report.decode().splitlines())}
    assert lines["in/astronaut.png"]["decision"] == "block"
    assert lines["in/astronaut.png"]["verdict_key"] == "out/astronaut.verdict.json"

    # When the same job runs again, nothing changed: both are skipped and keep their decisions
    env = fleet.env(CUTOUT_SAFETY__POLICY_FILE=str(policy_file(tmp_path, version="t1", face="block")))
    again = fleet.wait_for_job(fleet.enqueue(*args, env=env)["job_id"], check=True)
    assert (again["skipped"], again["succeeded"], again["decisions"]) == (2, 0, {"allow": 1, "block": 1})

    # When only the policy's version changes, then both are recomputed and carry the new version
    third = run_with(policy_file(tmp_path, version="t2", face="block"))
    assert (third["succeeded"], third["skipped"]) == (2, 0)
    assert read_verdict(fleet.read(bucket, "out/chelsea.verdict.json")).policy_version == "t2"
