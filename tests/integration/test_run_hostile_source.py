"""`cutout run` on a source folder that someone else can write to (issue 11, rows 4 and 6).

The output may not be the source itself, however it is spelled; what is not a regular file in the source
is left out and reported instead of crashing or hanging the run; and an item stuck in native code fails
with `timeout` at its hard time limit while the run goes on.  Every test runs the real `cutout` command.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from onnx import helper, numpy_helper
from PIL import Image

from tests.support.fleet import run_cli
from tests.support.processes import children, kill9, wait_for
from tests.support.tiny_models import (
    HANG_MODEL,
    HANG_TRIPS,
    _logits_nodes,
    _nudged_u2netp,
    _serialise,
    builtin_spec,
    spin_loop_body,
    tiny_table,
    write_catalog,
    write_tiny_models,
)

pytestmark = pytest.mark.integration

MODEL = "tiny-u2netp"
# tiny-hang's endless loop, entered only when the image is bright: one job can hold items that hang and
# items that finish, with the one model a `cutout run` job has.
BRIGHT_HANG_MODEL = "tiny-hang-when-bright"
ITEM_TIME_LIMIT_S = 1.0
HARD_LIMIT_GRACE_S = 1.0
# Far more than the run needs with its time limit, far less than "forever".
RUN_BOUND_S = 120.0
SIDE_PX = 64
CHILD_START_S = 30.0
MARK_PX = 8


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model dir, catalogue): the tiny models plus tiny-hang-when-bright."""
    model_dir = tmp_path_factory.mktemp("models")
    write_tiny_models(model_dir)
    data = _hang_when_bright_model()
    (model_dir / f"{BRIGHT_HANG_MODEL}.onnx").write_bytes(data)
    tables = {BRIGHT_HANG_MODEL: tiny_table(HANG_MODEL, f"{BRIGHT_HANG_MODEL}.onnx", _sha256(data))}
    tiny = (model_dir / "tiny-catalog.toml").read_text("utf-8")
    catalog = write_catalog(model_dir / "run-catalog.toml", tables)
    catalog.write_text(tiny + "\n" + catalog.read_text("utf-8"), "utf-8")
    return model_dir, catalog


@pytest.fixture
def env(models: tuple[Path, Path], cutout_bin: str) -> dict[str, str]:
    model_dir, catalog = models
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CUTOUT_")}
    environment.update(
        PATH=f"{Path(cutout_bin).parent}{os.pathsep}{environment.get('PATH', '')}",
        CUTOUT_MODEL_DIR=str(model_dir),
        CUTOUT_MODEL_CATALOG=str(catalog),
        CUTOUT_DEFAULT_MODEL=MODEL,
        CUTOUT_WORKER__INTRA_OP_THREADS="1",
        CUTOUT_REDIS_URL="redis://127.0.0.1:1/0",  # embedded mode needs no Redis
    )
    return environment


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hang_when_bright_model() -> bytes:
    """tiny-hang's graph whose loop runs only while the normalised input's mean is above 0 (a bright
    image): for a dark image the loop turns zero times and the model returns tiny-u2netp's mask."""
    spec = builtin_spec("u2netp")
    width, height = spec.input_size
    input_name = spec.input_name or "input"
    nodes, initializers = _logits_nodes(input_name, width, height)
    body = spin_loop_body()
    initializers += [
        numpy_helper.from_array(np.array(HANG_TRIPS, dtype=np.int64), "trips"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "brightness_threshold"),
        numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "tiny"),
    ]
    nodes += [
        helper.make_node("ReduceMean", [input_name], ["brightness"], keepdims=0),
        helper.make_node("Greater", ["brightness", "brightness_threshold"], ["bright"]),
        helper.make_node("Loop", ["trips", "bright", "brightness"], ["count"], body=body),
        helper.make_node("Mul", ["count", "tiny"], ["nudge"]),
    ]
    return _serialise(_nudged_u2netp(spec, nodes, initializers))


def _png(*, bright: bool) -> bytes:
    """A square of one shade with a small mark of the other (the model divides by the image's maximum)."""
    pixels = np.full((SIDE_PX, SIDE_PX, 3), 255 if bright else 0, dtype=np.uint8)
    pixels[:MARK_PX, :MARK_PX] = 0 if bright else 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _photos(folder: Path, names: tuple[str, ...] = ("a.png", "b.png")) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: _png(bright=False) for name in names}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def _run(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("cutout", env, "run", *args, timeout_s=RUN_BOUND_S, check=False)


# Row 4: the output may not be the source.


@pytest.mark.parametrize("spelling", ["{src}", "{src}/", "{src}/.", "{src}/../src", "{link}", "{link}/."])
def test_an_output_that_is_the_source_however_spelled_is_refused_before_any_work(
    tmp_path: Path, env: dict[str, str], spelling: str
) -> None:
    # Given a source folder of PNGs (whose cutouts would be PNGs of the same names), and a symlink to it
    src = tmp_path / "src"
    photos = _photos(src)
    (tmp_path / "link").symlink_to(src)

    # When the output is that same folder, spelled some way
    result = _run(env, str(src), "--out", spelling.format(src=src, link=tmp_path / "link"), "--json")

    # Then the run is refused as a usage error, and not one source byte changed
    assert result.returncode == 2, result.stderr
    assert "is the source itself" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in src.iterdir()) == sorted(photos)
    assert all((src / name).read_bytes() == data for name, data in photos.items())


def test_an_output_inside_the_source_by_another_spelling_is_left_out_of_the_listing(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # Given a source folder and a symlink to it; the output is a folder inside it, spelled through the link
    src = tmp_path / "src"
    _photos(src)
    out = tmp_path / "link" / "cutouts"
    (tmp_path / "link").symlink_to(src)

    # When the job runs twice into it
    first = _run(env, str(src), "--out", str(out), "--json")
    second = _run(env, str(src), "--out", f"{src}/./cutouts", "--json")

    # Then both process the two sources only: the first run's cutouts and reports are left out
    for result in (first, second):
        assert result.returncode == 0, result.stderr
        job = json.loads(result.stdout)
        assert (job["total"], job["succeeded"]) == (2, 2), job
    assert sorted(p.name for p in (src / "cutouts").glob("*.png")) == ["a.png", "b.png"]


def test_an_s3_output_that_is_the_source_prefix_is_refused_by_the_enqueue_rule(
    env: dict[str, str], s3_client, s3_endpoint: str, new_bucket
) -> None:  # type: ignore[no-untyped-def]
    # Given a bucket with a PNG under in/
    bucket = new_bucket("same")
    s3_client.put_object(Bucket=bucket, Key="in/a.png", Body=_png(bright=False))
    s3_env = {**env, "CUTOUT_S3__ENDPOINT_URL": s3_endpoint}
    s3_env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})

    # When `cutout run` is told to write to the same prefix, with other slashes
    result = _run(s3_env, f"s3://{bucket}/in/", "--out", f"s3://{bucket}/in")

    # Then it is refused like `cutout enqueue` refuses it, and the source is untouched
    assert result.returncode == 2, result.stderr
    assert "is the source itself" in result.stderr
    keys = [obj["Key"] for obj in s3_client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["in/a.png"]


# Row 6: what is not a regular file is left out and reported; an item that hangs fails `timeout`.


def test_special_files_in_the_source_are_left_out_and_reported_and_the_rest_is_processed(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # Given a source with one photo and, under image names, a broken symlink, a symlink loop, a FIFO,
    # a symlink to a photo outside the folder and a symlink to a folder outside it
    src, outside = tmp_path / "src", tmp_path / "outside"
    _photos(src, ("photo.png",))
    _photos(outside, ("private.png",))
    (src / "broken.png").symlink_to(tmp_path / "nowhere.png")
    (src / "loop.png").symlink_to(src / "loop.png")
    os.mkfifo(src / "fifo.png")
    (src / "escape.png").symlink_to(outside / "private.png")
    (src / "elsewhere").symlink_to(outside)
    out = tmp_path / "out"

    # When the folder is run
    started = time.monotonic()
    result = _run(env, str(src), "--out", str(out), "--json")

    # Then the run ends at once, cuts out the photo, and names each file it left out with the reason
    assert time.monotonic() - started < RUN_BOUND_S / 2
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    job = json.loads(result.stdout)
    assert (job["total"], job["succeeded"], job["ignored"]) == (1, 1, 5), job
    reasons = {entry["key"]: entry["reason"] for entry in job["not_listed"]["files"]}
    assert reasons == {
        "broken.png": "a broken symlink",
        "loop.png": "a symlink loop",
        "fifo.png": "a FIFO, not a regular file",
        "escape.png": "a symlink that leads out of the source folder (not followed)",
        "elsewhere": "a symlink that leads out of the source folder (not followed)",
    }
    assert all(f"left out {key}: {reason}" in result.stderr for key, reason in reasons.items())
    # ...and nothing from outside the source reached the output
    assert sorted(p.name for p in out.glob("*.png")) == ["photo.png"]


def test_an_item_that_hangs_in_the_model_fails_timeout_and_the_others_are_cut_out(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # Given a model that never returns on bright images, a bright image between two dark ones, and a
    # hard time limit of two seconds an item
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for name, bright in (("a-dark.png", False), ("b-bright.png", True), ("c-dark.png", False)):
        (src / name).write_bytes(_png(bright=bright))
    env = {
        **env,
        "CUTOUT_DEFAULT_MODEL": BRIGHT_HANG_MODEL,
        "CUTOUT_WORKER__ITEM_TIME_LIMIT_S": str(ITEM_TIME_LIMIT_S),
        "CUTOUT_WORKER__HARD_LIMIT_GRACE_S": str(HARD_LIMIT_GRACE_S),
    }

    # When the folder is run
    result = _run(env, str(src), "--out", str(out), "--json", "--job-id", "hang")

    # Then the run finishes: the bright item failed `timeout`, the dark ones (one after a new child
    # process took over) were cut out
    assert result.returncode == 1, result.stderr
    job = json.loads(result.stdout)
    assert (job["total"], job["succeeded"], job["failed"]) == (3, 2, 1), job
    lines = [json.loads(line) for line in (out / "_reports" / "hang.jsonl").read_text().splitlines()]
    failed = [line for line in lines if line["status"] == "failed"]
    assert [(line["key"], line["error_code"]) for line in failed] == [("b-bright.png", "timeout")]
    assert "hard time limit" in failed[0]["error"]
    assert sorted(p.name for p in out.glob("*.png")) == ["a-dark.png", "c-dark.png"]


def test_a_child_spinning_in_the_model_dies_with_a_killed_cutout_run(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # Given `cutout run` on a bright image with the hanging model and a long time limit
    src = tmp_path / "src"
    src.mkdir()
    (src / "bright.png").write_bytes(_png(bright=True))
    env = {**env, "CUTOUT_DEFAULT_MODEL": BRIGHT_HANG_MODEL, "CUTOUT_WORKER__ITEM_TIME_LIMIT_S": "600"}
    run = subprocess.Popen(
        ["cutout", "run", str(src), "--out", str(tmp_path / "out")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    spinning: list[int] = []
    try:
        assert wait_for(lambda: children(run.pid), CHILD_START_S), "no child process started"
        spinning = children(run.pid)

        # When the parent is killed with SIGKILL (no cleanup runs) while the child spins in the model
        kill9(run.pid)
        run.wait(CHILD_START_S)

        # Then the child does not outlive it
        assert wait_for(lambda: not any(_alive(pid) for pid in spinning), CHILD_START_S), spinning
    finally:
        for pid in (run.pid, *spinning):
            kill9(pid)


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for a parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
