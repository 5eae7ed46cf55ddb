"""Which safety levels this worker can run: what it advertises to `cutout enqueue` (worker/control.py).

`none` always; `light` when `nudenet` (the optional `safety-light` extra) imports and ships the pinned
model file.  Found once per process and cached: the answer cannot change without a restart.
Nothing here imports NudeNet or OpenCV until the first question.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable

from cutout_fleet.errors import ConfigError
from cutout_fleet.safety.levels import LEVEL_EXTRAS, NO_SAFETY, NUDENET_320N, SafetyModel

log = logging.getLogger(__name__)


def install_hint(level: str) -> str:
    extra = LEVEL_EXTRAS.get(level, "")
    return (
        f"install the {extra!r} extra on the worker (pip install 'cutout-fleet[{extra}]', or build the "
        f"image with --build-arg WITH_SAFETY_LIGHT=true; NudeNet is AGPL-3.0, see README.md) and restart it"
    )


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
def safety_levels() -> tuple[str, ...]:
    """The safety levels this worker can run."""
    levels = [NO_SAFETY]
    problem = nudenet_problem()
    if problem is None:
        levels.append("light")
    else:
        log.info("safety level light is not available on this worker: %s", problem)
    return tuple(levels)
