"""One onnxruntime session from model bytes, with the providers this machine has: every model's way in
(the cutout models and the safety detectors alike)."""

from __future__ import annotations

from collections.abc import Sequence

import onnxruntime as ort

from cutout_fleet.errors import ConfigError

CPU_PROVIDER = "CPUExecutionProvider"


def open_session(
    data: bytes, providers: Sequence[str], *, intra_op_threads: int = 0, what: str
) -> ort.InferenceSession:
    """A session on the first of `providers` this onnxruntime build has (else the CPU); `what` names the
    model in the ConfigError raised when onnxruntime cannot load it."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    available = set(ort.get_available_providers())
    wanted = [p for p in providers if p in available] or [CPU_PROVIDER]
    try:
        return ort.InferenceSession(data, options, providers=wanted)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ConfigError(f"{what} cannot be loaded by onnxruntime: {exc}") from exc
