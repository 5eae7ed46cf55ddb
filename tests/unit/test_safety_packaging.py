"""NudeNet is opt-in (AGPL-3.0): the base install, the producer and a plain CPU worker never need it.

The worker with it and without it, for real, is in tests/integration/test_safety_capabilities.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from cutout_fleet.safety import STAGE_MODELS
from tests.support.paths import REPO_ROOT

# Modules a process without the safety-light extra must never load.
HEAVY = ("nudenet", "cv2")
WATCHED = [*HEAVY, "onnxruntime"]
# What the producer and `cutout` itself import; none of it may pull NudeNet, OpenCV or onnxruntime.
PRODUCER_MODULES = (
    "cutout_fleet.cli",
    "cutout_fleet.producer.plan",
    "cutout_fleet.producer.fleet",
    "cutout_fleet.producer.dryrun",
    "cutout_fleet.safety",
)


def pyproject() -> dict[str, object]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text("utf-8"))


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~\[;]", req, maxsplit=1)[0].lower() for req in requirements}


def blocker(tmp_path: Path) -> Path:
    """A folder that, first on PYTHONPATH, makes `nudenet` and `cv2` fail to import, as if not installed."""
    for name in HEAVY:
        package = tmp_path / "blocked" / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(f"raise ImportError('{name} is not installed (test blocker)')\n")
    return tmp_path / "blocked"


def loaded_after(code: str, env: dict[str, str] | None = None) -> list[str]:
    """The top-level modules among WATCHED that `code` leaves loaded."""
    probe = (
        f"{code}\nimport json, sys\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(%r))))" % (WATCHED,)
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


def test_the_base_install_has_neither_nudenet_nor_opencv() -> None:
    project = pyproject()["project"]
    assert isinstance(project, dict)

    assert not requirement_names(project["dependencies"]) & {
        "nudenet",
        "opencv-python-headless",
        "opencv-python",
    }
    assert project["optional-dependencies"]["cpu"] == []


def test_the_safety_light_extra_pins_the_nudenet_the_worker_checks() -> None:
    extras = pyproject()["project"]["optional-dependencies"]  # type: ignore[index]

    assert f"nudenet=={STAGE_MODELS['nudenet'].version}" in extras["safety-light"]
    assert "opencv-python-headless" in requirement_names(extras["safety-light"])
    assert "cutout-fleet[safety-full]" in extras["gpu"]
    assert "cutout-fleet[safety-light]" in extras["safety-full"]
    assert "nudenet" not in requirement_names(extras["gpu"])  # only through the extra, pinned once
    assert "nudenet" not in requirement_names(extras["safety-full"])


def test_the_base_install_and_the_light_extra_have_no_torch_transformers_or_llama_cpp() -> None:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    heavy = {"torch", "transformers", "llama-cpp-python", "huggingface-hub"}

    assert not requirement_names(project["dependencies"]) & heavy
    assert not requirement_names(project["optional-dependencies"]["safety-light"]) & heavy
    assert requirement_names(project["optional-dependencies"]["safety-full"]) >= heavy


def test_ci_installs_torch_cpu_first_and_every_safety_extra_so_no_safety_test_skips() -> None:
    lines = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    torch_at = next(i for i, line in enumerate(lines) if 'pip install -q "torch==2.13.0+cpu"' in line)
    extras_at = next(i for i, line in enumerate(lines) if "pip install" in line and "-e" in line)

    assert torch_at < extras_at and "safety-full" in lines[extras_at]
    commands = [line for line in lines if not line.lstrip().startswith("#")]
    assert not any("--no-cache-dir" in line for line in commands)  # the llama wheel is reused


def test_ci_installs_the_safety_light_extra_so_the_nudenet_tests_run() -> None:
    install = next(
        line
        for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
        if "pip install" in line and "-e" in line
    )

    assert "safety-light" in install


def test_the_cpu_image_adds_nudenet_only_when_asked() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile.cpu").read_text()

    assert "ARG WITH_SAFETY_LIGHT=false" in dockerfile
    assert 'pip install ".[safety-light,heif-decode]"' in dockerfile
    assert 'pip install ".[heif-decode]"' in dockerfile  # the default: no NudeNet


def test_the_producer_and_the_safety_core_load_no_model_runtime() -> None:
    assert loaded_after("\n".join(f"import {m}" for m in PRODUCER_MODULES)) == []


def test_the_worker_loads_nudenet_only_when_a_safety_stage_first_needs_it() -> None:
    code = (
        "import cutout_fleet.worker.tasks, cutout_fleet.worker.celery_app, cutout_fleet.worker.safety.stages"
    )

    assert loaded_after(code) == ["onnxruntime"]


def test_the_producer_imports_with_nudenet_and_opencv_unimportable(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(blocker(tmp_path))}

    assert loaded_after("\n".join(f"import {m}" for m in PRODUCER_MODULES), env) == []


def test_the_cli_starts_with_nudenet_and_opencv_unimportable(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(blocker(tmp_path))}
    cutout = Path(sys.executable).parent / "cutout"
    assert cutout.exists(), "the `cutout` console script comes with the package install"

    result = subprocess.run(
        [str(cutout), "enqueue", "--help"], env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_without_nudenet_a_worker_advertises_no_safety_level_but_none(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(blocker(tmp_path))}
    code = "from cutout_fleet.worker.safety.capabilities import safety_levels\nprint(safety_levels())"

    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "('none',)"
