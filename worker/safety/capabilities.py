"""Which safety levels this worker can run: what it advertises to `cutout enqueue` (worker/control.py).

`none` always; `light` when `nudenet` (the optional `safety-light` extra) imports and ships the pinned
model file; `full` when, beyond that, torch, transformers and llama-cpp-python (the `safety-full` extra)
are installed and both Hub models are pulled.  Nothing here imports NudeNet or OpenCV until the first
question, and nothing imports torch at all.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable

from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import ConfigError
from cutout_fleet.safety.levels import LEVEL_EXTRAS, NO_SAFETY, NUDENET_320N, SafetyModel

log = logging.getLogger(__name__)


# The Python packages level `full` runs on (the `safety-full` extra), by import name.
FULL_RUNTIMES: tuple[str, ...] = ("torch", "transformers", "llama_cpp")
# `cutout models pull NAME` for each Hub stage (worker/models/hub_pull.py's routes).
PULL_NAMES: dict[str, str] = {"caption": "florence-2-large", "classifier": "llama-3.1-8b-instruct"}


def install_hint(level: str) -> str:
    extra = LEVEL_EXTRAS.get(level, "")
    if level == "full":
        return (
            f"install the {extra!r} extra on the worker (pip install 'cutout-fleet[{extra}]'; "
            "Dockerfile.gpu has it) and restart it"
        )
    return (
        f"install the {extra!r} extra on the worker (pip install 'cutout-fleet[{extra}]', or build the "
        f"image with --build-arg WITH_SAFETY_LIGHT=true; NudeNet is AGPL-3.0, see README.md) and restart it"
    )


def pull_hint(stage: str) -> str:
    return f"run `cutout models pull {PULL_NAMES[stage]}` on the worker (CUTOUT_MODEL_DIR) and restart it"


def model_resource(model: SafetyModel) -> Traversable:
    """The model file inside its package; ConfigError when the package does not import."""
    try:
        importlib.import_module(model.package)
    except Exception as exc:  # ImportError, or OSError from a native library OpenCV cannot load
        raise ConfigError(f"{model.package} is not usable here ({exc}); {install_hint('light')}") from exc
    return resources.files(model.package).joinpath(model.file)


def read_model_file(model: SafetyModel) -> bytes:
    """The model's bytes, checked against its pinned checksum, or ConfigError saying what to do."""
    resource = model_resource(model)
    if not resource.is_file():
        raise ConfigError(f"{model.package} has no {model.file}; reinstall {model.package}=={model.version}")
    data = resource.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != model.sha256:
        raise ConfigError(
            f"{model.package}'s {model.file} has sha256 {digest}, not the pinned {model.sha256}; "
            f"install {model.package}=={model.version} (the version the safety-light extra pins)"
        )
    return data


def nudenet_problem() -> str | None:
    """Why this worker cannot run NudeNet, or None when it can."""
    try:
        read_model_file(NUDENET_320N)
    except ConfigError as exc:
        return str(exc)
    return None


@lru_cache(maxsize=1)
def _light_levels() -> tuple[str, ...]:
    levels = [NO_SAFETY]
    problem = nudenet_problem()
    if problem is None:
        levels.append("light")
    else:
        log.info("safety level light is not available on this worker: %s", problem)
    return tuple(levels)


def full_problem(settings: Settings) -> str | None:
    """Why this worker cannot run level `full` (the caption and classifier after NudeNet), or None.

    Looks only at what is installed and pulled: importing torch or touching CUDA here, in the Celery
    parent before the pool forks, would break the children (models load after fork)."""
    missing = [name for name in FULL_RUNTIMES if importlib.util.find_spec(name) is None]
    if missing:
        return f"{', '.join(missing)} not installed; {install_hint('full')}"
    safety = settings.safety
    florence = safety.caption_model.local_path(settings.model_dir)
    if not (florence / "config.json").is_file():
        return f"the caption model {safety.caption_model.ref} is not in {florence}; {pull_hint('caption')}"
    gguf = safety.classifier_model.local_path(settings.model_dir)
    if not gguf.is_file():
        return (
            f"the classifier model {safety.classifier_model.ref} is not at {gguf}; {pull_hint('classifier')}"
        )
    return None


def safety_levels(settings: Settings | None = None) -> tuple[str, ...]:
    """The safety levels this worker can run (`full` only considered when `settings` are given)."""
    levels = _light_levels()
    if settings is None or "light" not in levels:
        return levels
    problem = full_problem(settings)
    if problem is not None:
        log.info("safety level full is not available on this worker: %s", problem)
        return levels
    return (*levels, "full")
