"""Which onnxruntime providers a model's session asks for, and the rule that a GPU model gets CUDA.

A model of the gpu queue asks for CUDA -> CPU, a model of the cpu queue for the CPU alone;
CUTOUT_WORKER__PROVIDERS, when set, is what every model asks for.  onnxruntime falls back to the CPU
without an error when CUDA cannot start (no driver, a CUDA or cuDNN library missing), and a GPU model on
the CPU is ~100x slower: so a gpu model whose session did not get CUDA is refused, unless
CUTOUT_WORKER__ALLOW_CPU=true.  A worker checks its pinned gpu models this way before it takes a task, in a
separate process (`probe_providers`): CUDA started in the Celery parent would not survive the fork into its
pool.

`python -m cutout_fleet.worker.models.providers SPEC_JSON MODEL_DIR PROVIDERS_JSON THREADS` is that process:
it loads the model and prints the providers its session got, as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from cutout_fleet.catalog import ModelSpec
from cutout_fleet.config.settings import WorkerSettings
from cutout_fleet.errors import ConfigError, CutoutError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_PROVIDERS = (CUDA, CPU)
CPU_PROVIDERS = (CPU,)
ALLOW_CPU_ENV = "CUTOUT_WORKER__ALLOW_CPU"
# Loading a large model and starting CUDA takes seconds; this bounds a probe that hangs in a driver.
PROBE_LIMIT_S = 600.0
_PROBE_ERROR_CHARS = 2000


def providers_for(spec: ModelSpec, worker: WorkerSettings) -> list[str]:
    """The providers `spec`'s session asks for, in order."""
    if worker.providers:
        return list(worker.providers)
    return list(GPU_PROVIDERS if spec.queue == "gpu" else CPU_PROVIDERS)


def check_gpu_providers(spec: ModelSpec, got: Sequence[str], *, allow_cpu: bool) -> str | None:
    """Refuse (ConfigError) a gpu model whose session did not get CUDA; with `allow_cpu` return the warning
    to log instead.  None when there is nothing to say (a cpu model, or CUDA is there)."""
    if spec.queue != "gpu" or CUDA in got:
        return None
    problem = (
        f"model {spec.name!r} is a gpu model but its onnxruntime session got {list(got)}, no "
        f"{CUDA}: on the CPU it is ~100x slower"
    )
    if allow_cpu:
        return f"{problem}; running it anyway because {ALLOW_CPU_ENV}=true"
    raise ConfigError(
        f"{problem}. Run it where onnxruntime-gpu, CUDA 12 and cuDNN 9 are installed and the GPU is "
        f"visible (the GPU image; `nvidia-smi` works), or set {ALLOW_CPU_ENV}=true to run it on the CPU"
    )


def probe_providers(
    spec: ModelSpec, model_dir: Path, providers: Sequence[str], *, intra_op_threads: int = 0
) -> list[str]:
    """The providers a session of `spec` actually gets, found in a child process (this one stays free of
    CUDA, so that the pool it forks later can start it).  ConfigError when the model cannot be loaded."""
    command = [
        sys.executable,
        "-m",
        __name__,
        spec.model_dump_json(),
        str(model_dir),
        json.dumps(list(providers)),
        str(intra_op_threads),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_LIMIT_S, check=False)
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"model {spec.name!r}: loading it to check its providers took over {PROBE_LIMIT_S:.0f} s"
        ) from None
    if result.returncode != 0:
        detail = (result.stderr.strip() or f"exit code {result.returncode}")[-_PROBE_ERROR_CHARS:]
        raise ConfigError(f"model {spec.name!r}: loading it to check its providers failed: {detail}")
    got = json.loads(result.stdout.strip().splitlines()[-1])
    return [str(name) for name in got]


def _probe_main(argv: Sequence[str]) -> int:
    from cutout_fleet.worker.models.runner import ModelSession

    spec_json, model_dir, providers_json, threads = argv
    try:
        session = ModelSession(
            ModelSpec.model_validate_json(spec_json),
            Path(model_dir),
            providers=json.loads(providers_json),
            intra_op_threads=int(threads),
        )
    except CutoutError as exc:
        print(exc, file=sys.stderr)
        return 3
    print(json.dumps(session.providers))
    return 0


if __name__ == "__main__":
    sys.exit(_probe_main(sys.argv[1:]))
