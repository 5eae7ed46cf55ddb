"""`cutout --help` and each command's `--help` load nothing heavy: no settings models, no boto3, no Redis
client, no model runtime.  (How long they take is measured in bench/cli_startup.py, not here.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.paths import REPO_ROOT

HEAVY = (
    "boto3", "botocore", "onnxruntime", "pydantic_settings", "cutout_fleet.config.settings", "redis",
    "kombu", "celery", "numpy", "PIL",
)  # fmt: skip


def _loaded_by(args: list[str]) -> list[str]:
    code = (
        "import json, sys\n"
        "from cutout_fleet.cli import cli\n"
        "try:\n"
        f"    cli({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    return list(json.loads(result.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    "args",
    [["--help"], ["enqueue", "--help"], ["run", "--help"], ["status", "--help"], ["worker", "--help"],
     ["models", "--help"], ["presets", "--help"], ["flower", "--help"]],
)  # fmt: skip
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    assert _loaded_by(args) == []
