"""Small real ONNX models that follow docs/contract.md, built with the ``onnx`` package for tests.

They stand in for trained networks: fixed filters with a known receptive field, run by onnxruntime
exactly like a trained model would be.

* ``identity``: outputs its inputs (recombination must give back Combined).
* ``guided``: a normalised 5x5 filter weighted per pixel by the features (albedo, normal, depth) -- a
  kernel-predicting filter in miniature; receptive radius 2, size multiple 1.
* ``pooled``: 2x2 average pool, 3x3 box, 2x nearest upsample: depends on the 2-pixel grid, so tiles must
  be aligned; receptive radius 3, size multiple 8.
* ``variance``: ``guided`` plus the two variance inputs (needs_variance true).
* ``nonfinite``: outputs Inf/NaN (a broken model: the core must refuse its output).
* ``nan``: outputs NaN everywhere (the same, without Inf).
* ``slow``: ``guided`` plus a stack of wide convolutions whose result is multiplied by 0: ~150 kFLOP per
  pixel (SLOW_LAYERS), so that a second worker or a signal meets a frame mid-work.
* ``greedy``: asks onnxruntime for terabytes per window (an Expand), which its allocator refuses.

``build_model(..., input_shapes={"normal": ["N", 4, "H", "W"]})`` declares other input shapes than the
contract's (the graph still runs: every builder reduces or filters channel-wise).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BASE_INPUTS = {"diffuse": 3, "specular": 3, "albedo": 3, "normal": 3, "depth": 1}
VARIANCE_INPUTS = {"diffuse_variance": 1, "specular_variance": 1}
OUTPUTS = ("diffuse_denoised", "specular_denoised")
REQUIRED_PASSES = [
    "combined", "diffuse_direct", "diffuse_indirect", "diffuse_color", "glossy_direct", "glossy_indirect",
    "glossy_color", "transmission_direct", "transmission_indirect", "transmission_color",
    "denoising_albedo", "denoising_normal", "denoising_depth",
]


def _value(name: str, channels: int, shape: list | None = None):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape or ["N", channels, "H", "W"])


def _box(channels: int, size: int) -> np.ndarray:
    """Depthwise box-filter weights (channels, 1, size, size)."""
    return np.full((channels, 1, size, size), 1.0 / (size * size), np.float32)


def metadata(name: str, radius: int, multiple: int, inputs: list[str], needs_variance: bool = False,
             overrides: dict[str, str | None] | None = None) -> dict[str, str]:
    """Contract metadata; ``overrides`` replace keys (without the ``kprcan.`` prefix); None drops a key."""
    meta = {
        "format_version": "1", "name": name, "architecture": "test-filter",
        "inputs": json.dumps(inputs), "outputs": json.dumps(list(OUTPUTS)),
        "required_passes": json.dumps(REQUIRED_PASSES), "needs_variance": str(needs_variance).lower(),
        "receptive_radius": str(radius), "size_multiple": str(multiple),
        "training_data": "none (fixed test filter)", "parameters": "0",
    }
    meta.update(overrides or {})
    return {f"kprcan.{k}": v for k, v in meta.items() if v is not None}


def _guided_nodes(inits: list) -> list:
    """x -> Conv5(x * w) / Conv5(w), with w = sigmoid(sum(albedo) + sum(normal) - 0.1 depth)."""
    inits += [numpy_helper.from_array(_box(3, 5), "box3"), numpy_helper.from_array(_box(1, 5), "box1"),
              numpy_helper.from_array(np.array(-0.1, np.float32), "depth_scale"),
              numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = [
        helper.make_node("ReduceSum", ["albedo", "axis1"], ["albedo_sum"], keepdims=1),
        helper.make_node("ReduceSum", ["normal", "axis1"], ["normal_sum"], keepdims=1),
        helper.make_node("Mul", ["depth", "depth_scale"], ["depth_term"]),
        helper.make_node("Add", ["albedo_sum", "normal_sum"], ["feature_sum"]),
        helper.make_node("Add", ["feature_sum", "depth_term"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["weight"]),
        helper.make_node("Conv", ["weight", "box1"], ["weight_sum"], pads=[2, 2, 2, 2]),
    ]
    for source in ("diffuse", "specular"):
        nodes += [
            helper.make_node("Mul", [source, "weight"], [f"{source}_weighted"]),
            helper.make_node("Conv", [f"{source}_weighted", "box3"], [f"{source}_filtered"],
                             group=3, pads=[2, 2, 2, 2]),
            helper.make_node("Div", [f"{source}_filtered", "weight_sum"], [f"{source}_denoised"]),
        ]
    return nodes


def _pooled_nodes(inits: list) -> list:
    inits += [numpy_helper.from_array(_box(3, 3), "box3"),
              numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    nodes = []
    for source in ("diffuse", "specular"):
        nodes += [
            helper.make_node("AveragePool", [source], [f"{source}_pooled"], kernel_shape=[2, 2],
                             strides=[2, 2]),
            helper.make_node("Conv", [f"{source}_pooled", "box3"], [f"{source}_blurred"], group=3,
                             pads=[1, 1, 1, 1]),
            helper.make_node("Resize", [f"{source}_blurred", "", "scales"], [f"{source}_denoised"],
                             mode="nearest"),
        ]
    return nodes


def _identity_nodes(inits: list) -> list:
    return [helper.make_node("Identity", [s], [f"{s}_denoised"]) for s in ("diffuse", "specular")]


def _nonfinite_nodes(inits: list) -> list:
    inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    return [helper.make_node("Div", ["diffuse", "zero"], ["diffuse_denoised"]),   # +-Inf and NaN (0/0)
            helper.make_node("Div", ["specular", "zero"], ["specular_denoised"])]


def _nan_nodes(inits: list) -> list:
    inits.append(numpy_helper.from_array(np.array(np.nan, np.float32), "nan"))
    return [helper.make_node("Add", [s, "nan"], [f"{s}_denoised"]) for s in ("diffuse", "specular")]


SLOW_WIDTH, SLOW_LAYERS = 32, 8  # 3x3 convolutions of 32 -> 32 channels: 2 * 32 * 32 * 9 FLOP per pixel each


def _slow_nodes(inits: list) -> list:
    nodes = _guided_nodes(inits)
    rng = np.random.default_rng(0)
    inits += [numpy_helper.from_array(rng.normal(0, 0.1, (SLOW_WIDTH, 3, 3, 3)).astype(np.float32), "w_in"),
              numpy_helper.from_array(rng.normal(0, 0.05, (SLOW_WIDTH, SLOW_WIDTH, 3, 3)).astype(np.float32),
                                      "w_mid"),
              numpy_helper.from_array(np.array(0.0, np.float32), "nothing")]
    nodes.append(helper.make_node("Conv", ["diffuse", "w_in"], ["slow_0"], pads=[1, 1, 1, 1]))
    for layer in range(SLOW_LAYERS):
        nodes += [helper.make_node("Conv", [f"slow_{layer}", "w_mid"], [f"slow_conv_{layer}"],
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"slow_conv_{layer}"], [f"slow_{layer + 1}"])]
    nodes += [helper.make_node("ReduceMean", [f"slow_{SLOW_LAYERS}"], ["slow_mean"], keepdims=1),
              helper.make_node("Mul", ["slow_mean", "nothing"], ["slow_zero"])]
    producer = next(node for node in nodes if node.output[0] == "diffuse_denoised")
    producer.output[0] = "diffuse_fast"
    nodes.append(helper.make_node("Add", ["diffuse_fast", "slow_zero"], ["diffuse_denoised"]))
    return nodes


def _greedy_nodes(inits: list) -> list:
    inits += [numpy_helper.from_array(np.array([1 << 20, 1 << 14, 1, 1, 1], np.int64), "huge"),
              numpy_helper.from_array(np.array([0], np.int64), "axis0"),
              numpy_helper.from_array(np.array(0.0, np.float32), "nothing")]
    nodes = _identity_nodes(inits)
    nodes[0].output[0] = "diffuse_same"
    return nodes + [
        helper.make_node("Unsqueeze", ["diffuse", "axis0"], ["diffuse_5d"]),
        helper.make_node("Expand", ["diffuse_5d", "huge"], ["enormous"]),  # 2**34 copies of the window
        helper.make_node("ReduceMax", ["enormous"], ["enormous_max"], keepdims=0),
        helper.make_node("Mul", ["enormous_max", "nothing"], ["enormous_zero"]),
        helper.make_node("Add", ["diffuse_same", "enormous_zero"], ["diffuse_denoised"]),
    ]


KINDS = {  # kind -> (node builder, receptive radius, size multiple)
    "identity": (_identity_nodes, 0, 1),
    "guided": (_guided_nodes, 2, 1),
    "pooled": (_pooled_nodes, 3, 8),
    "variance": (_guided_nodes, 2, 1),
    "nonfinite": (_nonfinite_nodes, 0, 1),
    "nan": (_nan_nodes, 0, 1),
    "slow": (_slow_nodes, 2, 1),
    "greedy": (_greedy_nodes, 0, 1),
}


def build_model(kind: str, name: str | None = None, input_shapes: dict[str, list] | None = None,
                **metadata_overrides: str | None) -> onnx.ModelProto:
    builder, radius, multiple = KINDS[kind]
    inputs = dict(BASE_INPUTS, **(VARIANCE_INPUTS if kind == "variance" else {}))
    inits: list = []
    nodes = builder(inits)
    if kind == "variance":  # use the variances (scaled to nothing) so they are real graph inputs
        inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "nothing"))
        for source in ("diffuse", "specular"):
            producer = next(node for node in nodes if node.output[0] == f"{source}_denoised")
            producer.output[0] = f"{source}_pre"
            nodes += [helper.make_node("Mul", [f"{source}_variance", "nothing"], [f"{source}_var0"]),
                      helper.make_node("Add", [f"{source}_pre", f"{source}_var0"], [f"{source}_denoised"])]
    shapes = input_shapes or {}
    graph = helper.make_graph(nodes, f"kprcan_test_{kind}",
                              [_value(n, c, shapes.get(n)) for n, c in inputs.items()],
                              [_value(n, 3) for n in OUTPUTS], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = metadata(name or kind, radius, multiple, list(inputs), kind == "variance", metadata_overrides)
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model


def save_model(folder: Path, kind: str, name: str | None = None, filename: str | None = None,
               input_shapes: dict[str, list] | None = None, **metadata_overrides: str | None) -> Path:
    """Write a test model to ``folder/filename`` (default ``<name or kind>.onnx``) and return the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (filename or f"{name or kind}.onnx")
    onnx.save(build_model(kind, name, input_shapes, **metadata_overrides), str(path))
    return path
