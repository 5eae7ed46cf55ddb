"""One runner for every model: an onnxruntime session driven by a ModelSpec."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from cutout_fleet.catalog import ModelSpec, verify_checksum
from cutout_fleet.errors import ConfigError, ModelError
from cutout_fleet.worker.imaging.prep import output_to_mask, to_model_input
from cutout_fleet.worker.interrupts import INTERRUPTS
from cutout_fleet.worker.models.onnx_session import open_session

log = logging.getLogger(__name__)


def missing_model_message(spec: ModelSpec, path: Path) -> str:
    return (
        f"model {spec.name!r} is not installed: {path} does not exist. "
        f"Fetch it with `cutout models pull {spec.name}` (CUTOUT_MODEL_DIR={path.parent})"
    )


def _tensor_type(dtype: str) -> str:
    """onnxruntime's name of a tensor type: float32 is 'tensor(float)', float16 'tensor(float16)'."""
    return f"tensor({'float' if dtype == 'float32' else dtype})"


class ModelSession:
    """A loaded, verified model.  Create once per process (after fork) and reuse for every image."""

    def __init__(
        self, spec: ModelSpec, model_dir: Path, *, providers: list[str], intra_op_threads: int = 0
    ) -> None:
        path = spec.path_in(model_dir)
        if not path.is_file():
            raise ConfigError(missing_model_message(spec, path))
        # Hash the very bytes we hand to onnxruntime: no gap between check and load.
        data = path.read_bytes()
        verify_checksum(spec, data, str(path))
        self.session = open_session(
            data, providers, intra_op_threads=intra_op_threads, what=f"model {spec.name!r} at {path}"
        )
        del data
        self.spec = spec
        self.asked_providers = list(providers)
        # What onnxruntime actually gave the session: it falls back to the CPU silently when CUDA
        # cannot start, so this, not the list asked for, says where the model runs.
        self.providers: list[str] = self.session.get_providers()
        if providers and providers[0] not in self.providers:
            log.warning(
                "model %s asked for %s but runs on %s: expect it to be much slower",
                spec.name,
                providers[0],
                self.providers,
            )
        self.input_name, self.output_name = self._check_contract()
        log.info(
            "loaded model %s from %s: providers %s (asked for %s)",
            spec.name,
            path,
            self.providers,
            self.asked_providers,
        )

    def _check_contract(self) -> tuple[str, str]:
        spec = self.spec
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if len(inputs) != 1:
            raise ConfigError(f"model {spec.name!r} has {len(inputs)} inputs; the runner feeds exactly one")
        first = inputs[0]
        if spec.input_name and first.name != spec.input_name:
            raise ConfigError(
                f"model {spec.name!r}: the file's input is {first.name!r}, the spec says {spec.input_name!r}"
            )
        if first.type != _tensor_type(spec.input_dtype):
            raise ConfigError(
                f"model {spec.name!r}: the file's input is {first.type}, the spec says {spec.input_dtype}"
            )
        shape = list(first.shape)
        expected = [1, 3, spec.input_size[1], spec.input_size[0]]
        if len(shape) != 4 or any(
            isinstance(dim, int) and dim != want for dim, want in zip(shape, expected, strict=True)
        ):
            raise ConfigError(f"model {spec.name!r}: input shape {shape} does not fit the spec's {expected}")
        try:
            output = outputs[spec.output_index]
        except IndexError:
            raise ConfigError(
                f"model {spec.name!r}: output_index {spec.output_index} "
                f"but the file has {len(outputs)} outputs"
            ) from None
        if output.type != _tensor_type(spec.output_dtype):
            raise ConfigError(
                f"model {spec.name!r}: the file's output {output.name!r} is {output.type}, the spec says "
                f"{spec.output_dtype}: it is another export of the model, with another contract"
            )
        return first.name, output.name

    def predict(self, image: Image.Image) -> np.ndarray:
        """An RGB image -> float32 mask in 0..1 at the model's input size (a float16 output is cast)."""
        spec = self.spec
        tensor = to_model_input(
            image,
            spec.input_size,
            scale=spec.scale,
            mean=spec.mean,
            std=spec.std,
            dtype=np.dtype(spec.input_dtype),
        )
        try:
            raw = self.session.run([self.output_name], {self.input_name: tensor})[0]
        except INTERRUPTS:
            raise  # a time limit that fired while the model ran is a timeout, not a model failure
        except Exception as exc:  # onnxruntime raises untyped errors for inputs it cannot run
            raise ModelError(f"model {spec.name!r} failed on this image: {exc}") from exc
        return output_to_mask(raw, spec.activation)
