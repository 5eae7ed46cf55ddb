"""Tiny ONNX models, built at test time, with the exact input/output contracts of the real ones.

- tiny-u2netp: input `input.1` f32 [1,3,320,320]; 7 outputs f32 [1,1,320,320], already probabilities
  (sigmoid in the graph); outputs[0] is the one used.
- tiny-birefnet: input `input_image` f32 [1,3,1024,1024]; 3 outputs at 256², 512² and 1024²; the last is
  [1,1,1024,1024] raw logits (no sigmoid).
- tiny-ben2: the official BEN2_Base.onnx contract: one input f32 [1,3,1024,1024] (fed RGB / 255, no mean/std),
  one output f16 [1,1,1024,1024] that is already a probability (sigmoid in the graph, then a cast).

Each graph is a 1x1 convolution over the normalised channels (so the mask depends on the photo) plus a
centred quadratic prior in logit space (so the mask has a subject in the middle and background at the
edges).  The prior is the broadcast sum of a column and a row constant: H + W floats instead of H * W.

Their catalogue entries copy every contract field from the built-in `u2netp` and `birefnet-lite` specs, so
if a real contract changes, the tiny models follow it and the tests exercise the new contract.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cutout_fleet.catalog import BUILTIN_CATALOG, ModelSpec, parse_catalog

TINY_MODELS = ("tiny-u2netp", "tiny-birefnet")
# The u2netp contract with a deliberately heavy, input-dependent chain of matrix products: a few hundred
# milliseconds per image, so "mid-job" and "mid-task" are deterministic in lifecycle and fault tests.
SLOW_MODEL = "tiny-slow"
SLOW_MATMULS = 120
# The u2netp contract around an ONNX Loop that never ends (trip count INT64 max, condition always true):
# onnxruntime spins inside one run() call until the process is killed, so the pool child always meets the
# hard time limit, however fast the machine (a long but finite model once beat the limit on a fast run).
HANG_MODEL = "tiny-hang"
HANG_TRIPS = int(np.iinfo(np.int64).max)
CATALOG_FILE = "tiny-catalog.toml"
# The ben2 contract (a gpu-queue model with a float16 output).  Not in TINY_MODELS: the tests over those
# run on every cpu-queue path, and a gpu model needs CUTOUT_WORKER__ALLOW_CPU=true on a machine without CUDA.
BEN2_MODEL = "tiny-ben2"

OPSET = 17
IR_VERSION = 9  # onnx may write a newer IR than the onnxruntime in use reads; 9 goes with opset 17

# Which built-in spec each tiny model copies its contract from.
CONTRACT_SOURCES = {
    "tiny-u2netp": "u2netp",
    "tiny-birefnet": "birefnet-lite",
    SLOW_MODEL: "u2netp",
    HANG_MODEL: "u2netp",
    BEN2_MODEL: "ben2",
}
# Spec fields that describe the file and where it comes from, not how to feed and read it.
NOT_CONTRACT = frozenset(
    {"name", "description", "file", "url", "pip_package", "pip_member", "md5", "sha256", "size_bytes"}
    | {"license"}
    | {"revision", "sha256_prefix", "pulled_sha256"}
)

# Weights: logits = CHANNEL_WEIGHT * sum(normalised RGB) + PRIOR_CENTRE - PRIOR_FALLOFF * (u² + v²), with u, v
# in -1..1 across the image.  On the sample photos this gives a blob that follows the picture's brightness,
# with plenty of pixels near 0 and near 1.
CHANNEL_WEIGHT = 0.6
PRIOR_CENTRE = 3.0
PRIOR_FALLOFF = 5.0
U2NETP_SIDE_OUTPUTS = 6  # u2netp returns d0 (the fused mask) plus six side outputs
BIREFNET_POOLS = (4, 2)  # the earlier, coarser BiRefNet outputs: 1024/4 and 1024/2


def builtin_spec(name: str) -> ModelSpec:
    """A spec from the built-in catalogue only: a CUTOUT_MODEL_CATALOG in the environment cannot alter it."""
    text = resources.files("cutout_fleet.config").joinpath(BUILTIN_CATALOG).read_text("utf-8")
    return parse_catalog((text, "the built-in catalogue")).get(name)


def write_tiny_models(model_dir: Path) -> Path:
    """Write both tiny models and `tiny-catalog.toml` into `model_dir`; return the catalogue's path."""
    model_dir.mkdir(parents=True, exist_ok=True)
    tables: dict[str, dict[str, Any]] = {}
    for name in (*TINY_MODELS, SLOW_MODEL, HANG_MODEL, BEN2_MODEL):
        data = model_bytes(name)
        file = f"{name}.onnx"
        (model_dir / file).write_bytes(data)
        tables[name] = tiny_table(name, file, hashlib.sha256(data).hexdigest())
    path = write_catalog(model_dir / CATALOG_FILE, tables)
    parse_catalog((path.read_text("utf-8"), str(path)))  # fail here, not in the test, if it is malformed
    return path


def tiny_table(name: str, file: str, sha256: str) -> dict[str, Any]:
    """The catalogue table of a tiny model: the real model's contract, this file's identity."""
    real = builtin_spec(CONTRACT_SOURCES[name])
    table = {key: value for key, value in real.model_dump().items() if key not in NOT_CONTRACT}
    table.update(file=file, sha256=sha256, description=f"test model with the contract of {real.name}")
    return table


def write_catalog(path: Path, extra_tables: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write `[models.NAME]` tables as a catalogue TOML file; None values are left out (the defaults)."""
    lines: list[str] = []
    for name, table in extra_tables.items():
        lines.append(f"[models.{_toml_key(name)}]")
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items() if v is not None)
        lines.append("")
    path.write_text("\n".join(lines), "utf-8")
    return path


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string with ASCII escapes is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


@functools.cache
def model_bytes(name: str) -> bytes:
    """The serialised tiny model `name` (built once per process)."""
    builders = {
        "tiny-u2netp": _build_u2netp,
        "tiny-birefnet": _build_birefnet,
        SLOW_MODEL: lambda spec: _build_slow(spec, SLOW_MATMULS),
        HANG_MODEL: lambda spec: _build_spin(spec, HANG_TRIPS),
        BEN2_MODEL: _build_ben2,
    }
    return _serialise(builders[name](builtin_spec(CONTRACT_SOURCES[name])))


def spin_model_bytes(trips: int) -> bytes:
    """tiny-hang's graph with a loop of `trips` turns: a finite twin that shows what the graph computes."""
    return _serialise(_build_spin(builtin_spec(CONTRACT_SOURCES[HANG_MODEL]), trips))


def _serialise(model: onnx.ModelProto) -> bytes:
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _build_u2netp(spec: ModelSpec) -> onnx.ModelProto:
    """Seven probability maps; d0 is the fused one, the side outputs are softer versions of it."""
    width, height = spec.input_size
    nodes, initializers = _logits_nodes(spec.input_name or "input", width, height)
    nodes.append(helper.make_node("Sigmoid", ["logits"], ["d0"]))
    outputs = ["d0"]
    for k in range(1, U2NETP_SIDE_OUTPUTS + 1):
        # Distinct values per output, so using the wrong output index shows up in a test.
        factor = numpy_helper.from_array(np.array(1.0 / (k + 1), dtype=np.float32), f"side{k}_factor")
        initializers.append(factor)
        nodes.append(helper.make_node("Mul", ["logits", factor.name], [f"side{k}_logits"]))
        nodes.append(helper.make_node("Sigmoid", [f"side{k}_logits"], [f"d{k}"]))
        outputs.append(f"d{k}")
    return _model(spec, nodes, initializers, [(out, width, height) for out in outputs])


def _build_slow(spec: ModelSpec, matmuls: int) -> onnx.ModelProto:
    """tiny-u2netp's mask, plus a negligible term that depends on `matmuls` products of the input."""
    width, height = spec.input_size
    nodes, initializers = _logits_nodes(spec.input_name or "input", width, height)
    rng = np.random.default_rng(7)
    mixer = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(
        np.float32
    )  # keeps magnitudes steady
    initializers += [
        numpy_helper.from_array(mixer, "mixer"),
        numpy_helper.from_array(np.array([3 * height, width], dtype=np.int64), "rows_shape"),
        numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "tiny"),
    ]
    nodes.append(helper.make_node("Reshape", [spec.input_name or "input", "rows_shape"], ["work0"]))
    for i in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"work{i}", "mixer"], [f"work{i + 1}"]))
    nodes += [
        helper.make_node("ReduceMean", [f"work{matmuls}"], ["work_mean"], keepdims=0),
        helper.make_node("Mul", ["work_mean", "tiny"], ["nudge"]),
    ]
    return _nudged_u2netp(spec, nodes, initializers)


def spin_loop_body() -> onnx.GraphProto:
    """The body of an ONNX Loop that adds 1 to a float each turn and always goes on: a loop whose trip count
    alone decides how long a run takes."""
    return helper.make_graph(
        [
            helper.make_node("Identity", ["keep_going_in"], ["keep_going_out"]),
            helper.make_node("Add", ["count_in", "step"], ["count_out"]),
        ],
        "spin_body",
        [
            helper.make_tensor_value_info("turn", TensorProto.INT64, []),
            helper.make_tensor_value_info("keep_going_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("count_in", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("keep_going_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("count_out", TensorProto.FLOAT, []),
        ],
        initializer=[numpy_helper.from_array(np.array(1.0, dtype=np.float32), "step")],
    )


def _build_spin(spec: ModelSpec, trips: int) -> onnx.ModelProto:
    """tiny-u2netp's mask, nudged by a counter that an ONNX Loop of `trips` turns carries up from the input.

    The loop's result feeds every output and starts from the input's mean, so onnxruntime can neither fold it
    into a constant nor drop it: each run turns the loop `trips` times (one scalar Add a turn).
    """
    width, height = spec.input_size
    nodes, initializers = _logits_nodes(spec.input_name or "input", width, height)
    body = spin_loop_body()
    initializers += [
        numpy_helper.from_array(np.array(trips, dtype=np.int64), "trips"),
        numpy_helper.from_array(np.array(True), "keep_going"),
        numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "tiny"),
    ]
    nodes += [
        helper.make_node("ReduceMean", [spec.input_name or "input"], ["count_start"], keepdims=0),
        helper.make_node("Loop", ["trips", "keep_going", "count_start"], ["count"], body=body),
        helper.make_node("Mul", ["count", "tiny"], ["nudge"]),
    ]
    return _nudged_u2netp(spec, nodes, initializers)


def _nudged_u2netp(
    spec: ModelSpec, nodes: list[onnx.NodeProto], initializers: list[TensorProto]
) -> onnx.ModelProto:
    """u2netp's seven outputs from `logits` + `nudge`: the mask of tiny-u2netp, made to wait on the nudge."""
    width, height = spec.input_size
    nodes += [
        helper.make_node("Add", ["logits", "nudge"], ["nudged_logits"]),
        helper.make_node("Sigmoid", ["nudged_logits"], ["d0"]),
    ]
    outputs = ["d0"]
    for k in range(1, U2NETP_SIDE_OUTPUTS + 1):
        nodes.append(helper.make_node("Identity", ["d0"], [f"d{k}"]))
        outputs.append(f"d{k}")
    return _model(spec, nodes, initializers, [(out, width, height) for out in outputs])


def _build_birefnet(spec: ModelSpec) -> onnx.ModelProto:
    """Coarse-to-fine raw logits; the last output is the full-resolution final prediction."""
    width, height = spec.input_size
    nodes, initializers = _logits_nodes(spec.input_name or "input", width, height)
    outputs = []
    for pool in BIREFNET_POOLS:
        out = f"logits_div{pool}"
        window = [pool, pool]
        nodes.append(helper.make_node("AveragePool", ["logits"], [out], kernel_shape=window, strides=window))
        outputs.append((out, width // pool, height // pool))
    nodes.append(helper.make_node("Identity", ["logits"], ["final"]))
    outputs.append(("final", width, height))
    return _model(spec, nodes, initializers, outputs)


def _logits_nodes(input_name: str, width: int, height: int) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    """input -> `logits` [1,1,H,W]: a 1x1 conv over the channels plus the centred prior."""
    weight = np.full((1, 3, 1, 1), CHANNEL_WEIGHT, dtype=np.float32)
    bias = np.zeros(1, dtype=np.float32)
    v = np.linspace(-1.0, 1.0, height, dtype=np.float32)
    u = np.linspace(-1.0, 1.0, width, dtype=np.float32)
    prior_rows = (PRIOR_CENTRE / 2 - PRIOR_FALLOFF * v**2).reshape(1, 1, height, 1)
    prior_cols = (PRIOR_CENTRE / 2 - PRIOR_FALLOFF * u**2).reshape(1, 1, 1, width)
    initializers = [
        numpy_helper.from_array(weight, "conv_weight"),
        numpy_helper.from_array(bias, "conv_bias"),
        numpy_helper.from_array(prior_rows.astype(np.float32), "prior_rows"),
        numpy_helper.from_array(prior_cols.astype(np.float32), "prior_cols"),
    ]
    nodes = [
        helper.make_node("Conv", [input_name, "conv_weight", "conv_bias"], ["evidence"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["prior_rows", "prior_cols"], ["prior"]),  # broadcasts to [1,1,H,W]
        helper.make_node("Add", ["evidence", "prior"], ["logits"]),
    ]
    return nodes, initializers


def _model(
    spec: ModelSpec,
    nodes: list[onnx.NodeProto],
    initializers: list[TensorProto],
    outputs: list[tuple[str, int, int]],
) -> onnx.ModelProto:
    width, height = spec.input_size
    graph = helper.make_graph(
        nodes,
        f"tiny_{spec.name.replace('-', '_')}",
        [helper.make_tensor_value_info(spec.input_name or "input", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 1, h, w]) for name, w, h in outputs],
        initializer=initializers,
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="cutout-fleet-tests"
    )


def _build_ben2(spec: ModelSpec) -> onnx.ModelProto:
    """One float16 probability map: sigmoid of the logits, cast to float16 in the graph (as BEN2's official
    export returns it).  Its input is named `input`: the real file's input name is not documented."""
    width, height = spec.input_size
    input_name = spec.input_name or "input"
    nodes, initializers = _logits_nodes(input_name, width, height)
    nodes += [
        helper.make_node("Sigmoid", ["logits"], ["probability"]),
        helper.make_node("Cast", ["probability"], ["mask"], to=TensorProto.FLOAT16),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_ben2",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT16, [1, 1, height, width])],
        initializer=initializers,
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="cutout-fleet-tests"
    )
