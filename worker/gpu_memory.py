"""What the GPUs of this machine hold, for the worker's start-up log.

Read with `nvidia-smi`, never through CUDA: the Celery parent must not create a CUDA context before
the pool forks (the children load the models), and the CPU worker has no CUDA library at all.
"""

from __future__ import annotations

import logging
import shutil
import subprocess

log = logging.getLogger(__name__)

QUERY = "index,name,memory.total,memory.used,memory.free"
TIMEOUT_S = 10.0


def gpu_memory() -> list[dict[str, str]] | None:
    """One row per GPU (index, name, total/used/free MiB), or None when no GPU can be seen."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return None
    try:
        done = subprocess.run(
            [tool, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi is there but did not answer: %s", exc)
        return None
    fields = QUERY.split(",")
    rows = [
        dict(zip(fields, (v.strip() for v in line.split(",")), strict=False))
        for line in done.stdout.splitlines()
    ]
    return [row for row in rows if len(row) == len(fields)] or None


def log_gpu_memory(when: str) -> None:
    """Log every GPU's memory (`when` says at which point), or that none is visible."""
    rows = gpu_memory()
    if rows is None:
        log.info("GPU memory %s: no GPU visible (no nvidia-smi answer); models run on the CPU", when)
        return
    for row in rows:
        log.info(
            "GPU %s (%s) memory %s: %s MiB used, %s MiB free of %s MiB",
            row["index"], row["name"], when, row["memory.used"], row["memory.free"], row["memory.total"],
        )  # fmt: skip
