"""The tiny-hang model really never returns, so the poison test does not depend on the machine's speed.

Its graph is tiny-u2netp's around an ONNX Loop with an INT64-max trip count.  These tests prove that
onnxruntime accepts that graph, keeps the loop after its optimisations, and stays inside run() well past
the hard time limit the poison test sets; a finite twin of the same graph shows what it would return.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.support.paths import REPO_ROOT
from tests.support.tiny_models import HANG_MODEL, model_bytes, spin_model_bytes

pytestmark = pytest.mark.integration

# Longer than the poison test's hard limit (1.5 s soft + 1.0 s grace) with room to spare.
STILL_RUNNING_AFTER_S = 5.0
FINITE_TRIPS = 1000
INPUT_NAME = "input.1"
CONTRACT_OUTPUTS = 7
CONTRACT_SHAPE = (1, 1, 320, 320)

# Runs the model as the worker's runner does (every optimisation, one intra-op thread) in a thread of a
# process of its own: a hanging run() cannot be stopped from Python, only by ending its process.
PROBE = textwrap.dedent(
    """
    import json, os, sys, threading
    import numpy as np, onnxruntime as ort
    from tests.support.tiny_models import HANG_MODEL, model_bytes

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes(HANG_MODEL), options, providers=["CPUExecutionProvider"])
    image = np.random.default_rng(1).random((1, 3, 320, 320), dtype=np.float32)
    ended = {}

    def run():
        try:
            session.run(None, {"input.1": image})
            ended["returned"] = True
        except Exception as exc:
            ended["error"] = repr(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(float(sys.argv[1]))
    print(json.dumps({"running": thread.is_alive(), **ended}), flush=True)
    os._exit(0)  # the run never ends: leave without waiting for onnxruntime
    """
)


def _session(model: bytes, **options: object) -> ort.InferenceSession:
    settings = ort.SessionOptions()
    settings.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    settings.intra_op_num_threads = 1
    settings.log_severity_level = 3  # no warning about saving a hardware-specific optimised graph
    for name, value in options.items():
        setattr(settings, name, value)
    return ort.InferenceSession(model, settings, providers=["CPUExecutionProvider"])


def _photo_tensor() -> np.ndarray:
    return np.random.default_rng(2).random((1, 3, 320, 320), dtype=np.float32)


def test_the_hang_model_is_still_inside_onnxruntime_long_after_the_hard_time_limit() -> None:
    # Given the tiny-hang model running in a thread of its own process
    # When we look after STILL_RUNNING_AFTER_S
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(STILL_RUNNING_AFTER_S)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=STILL_RUNNING_AFTER_S + 60,
    )

    # Then the run neither returned nor failed: it is still turning the loop
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"running": True}, result.stderr


def test_onnxruntime_keeps_the_loop_after_its_graph_optimisations(tmp_path: Path) -> None:
    # Given the hang model loaded with every optimisation the worker's runner turns on
    optimised = tmp_path / "optimised.onnx"

    # When onnxruntime writes out the graph it will actually run
    _session(model_bytes(HANG_MODEL), optimized_model_filepath=str(optimised))

    # Then the endless loop is still in it, not folded or pruned away
    op_types = [node.op_type for node in onnx.load(str(optimised)).graph.node]
    assert "Loop" in op_types, op_types


def test_a_finite_twin_of_the_graph_returns_the_u2netp_contract_and_tiny_u2netps_mask() -> None:
    # Given the same graph with a loop of FINITE_TRIPS turns, and tiny-u2netp
    image = _photo_tensor()

    # When both run on the same input
    spun = _session(spin_model_bytes(FINITE_TRIPS)).run(None, {INPUT_NAME: image})
    plain = _session(model_bytes("tiny-u2netp")).run(None, {INPUT_NAME: image})

    # Then it has u2netp's outputs, and its mask is tiny-u2netp's: the loop only nudges it
    assert len(spun) == CONTRACT_OUTPUTS
    assert all(output.shape == CONTRACT_SHAPE and output.dtype == np.float32 for output in spun)
    np.testing.assert_allclose(spun[0], plain[0], atol=1e-6)
