"""int8 quantization of the shipped float model (training/quantize.py) and the contract's precision key.

The quantized model is the real ``models/fast.onnx`` made int8 by onnxruntime, calibrated on the real
Cycles render ``examples/noisy.exr`` and scored against its 2048-spp ``examples/reference.exr``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
import pytest
from cli_helpers import kprcan
from onnx import TensorProto
from onnx_models import save_model

from denoiser_core import DenoiserError, load_model, read_exr
from denoiser_core.images import psnr, to_srgb
from denoiser_core.models import read_model_info
from training import quantize
from training.metrics import relmse

REPO = Path(__file__).resolve().parents[1]
FLOAT_MODEL = REPO / "models" / "fast.onnx"
NOISY, REFERENCE = REPO / "examples" / "noisy.exr", REPO / "examples" / "reference.exr"
# Operators of the float graph that must come through quantization untouched: pre-processing (Log, Clip,
# Sigmoid), pooling and upsampling, the softmax over each kernel (ReduceMax, Sub, Exp, ReduceSum, Div) and
# the kernel application (Slice, Mul, Add).
FLOAT_OPS = ("Log", "Clip", "Sigmoid", "AveragePool", "Resize", "ReduceMax", "Sub", "Exp", "ReduceSum",
             "Div", "Mul", "Add")


def first_layer(path: Path) -> dict:
    image = read_exr(path)
    return image.canonical_passes(image.layers[0])


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("int8") / "fast-int8.onnx"
    assert quantize.main([str(FLOAT_MODEL), "-o", str(output), "--calibration", str(NOISY)]) == 0
    return output


def test_only_the_convolutions_are_quantized(int8_model):
    source, graph = onnx.load(str(FLOAT_MODEL)).graph, onnx.load(str(int8_model)).graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    initializers = {init.name: init for init in graph.initializer}
    convolutions = [node for node in graph.node if node.op_type == "Conv"]
    assert len(convolutions) == Counter(n.op_type for n in source.node)["Conv"]
    # the first convolution of each branch, which reads the pre-processed inputs, stays float32
    inputs_read = {c.name for c in convolutions if c.input[1] in initializers}
    assert len(inputs_read) == 2 and all("encoders.0/encoders.0.0/" in name for name in inputs_read)
    assert quantize.input_convolutions(onnx.load(str(FLOAT_MODEL))) == inputs_read
    for conv in convolutions:
        if conv.name in inputs_read:
            assert initializers[conv.input[1]].data_type == TensorProto.FLOAT
            assert producer[conv.input[0]].op_type != "DequantizeLinear"
            continue
        # int8 weights and uint8 activations, dequantized right before the Conv
        data, weight = producer[conv.input[0]], producer[conv.input[1]]
        assert data.op_type == weight.op_type == "DequantizeLinear", conv.name
        assert initializers[weight.input[0]].data_type == TensorProto.INT8, conv.name
        assert producer[data.input[0]].op_type == "QuantizeLinear", conv.name
        assert initializers[data.input[2]].data_type == TensorProto.UINT8, conv.name
    for node in graph.node:  # each QDQ pair sits on a convolution's input or output, nowhere else
        if node.op_type == "QuantizeLinear":
            dequantized = [c for dq in consumers[node.output[0]] for c in consumers[dq.output[0]]]
            on_output = node.input[0] in producer and producer[node.input[0]].op_type == "Conv"
            assert on_output or all(c.op_type == "Conv" for c in dequantized), node.name
    ops, float_ops = Counter(n.op_type for n in graph.node), Counter(n.op_type for n in source.node)
    assert {op: ops[op] for op in FLOAT_OPS} == {op: float_ops[op] for op in FLOAT_OPS}
    # ReLUs after quantized convolutions are folded into their uint8 range; the float ones keep theirs
    assert ops["Relu"] == len(inputs_read)
    assert not [op for op in ops if op.startswith("QLinear") or op.startswith("ConvInteger")]
    # 8-bit weights instead of 32; the graph itself (nodes, names, shapes) is a fixed part of the file
    assert int8_model.stat().st_size < FLOAT_MODEL.stat().st_size / 2


def test_model_info_and_kprcan_models_show_int8(int8_model, tmp_path):
    info = read_model_info(int8_model)
    float_info = read_model_info(FLOAT_MODEL)
    assert (info.name, info.precision, float_info.precision) == ("fast-int8", "int8", "float32")
    assert (info.receptive_radius, info.size_multiple, info.inputs, info.denoise_residual) == (
        float_info.receptive_radius, float_info.size_multiple, float_info.inputs, float_info.denoise_residual)
    assert '"calibration_renders": ["' + str(NOISY) in info.metadata["kprcan.quantization"]
    listing = kprcan("models", home=tmp_path, model_path=int8_model.parent)
    assert listing.code == 0, listing.stderr
    assert f"fast-int8 (kpunet, int8 convolutions, {float_info.parameters:,} parameters" in listing.stdout


def test_int8_output_stays_within_tolerance_of_float(int8_model):
    """Tolerance: the int8 beauty at least 53 dB PSNR (clamped sRGB) from the float beauty, and its PSNR
    against the reference within 0.1 dB of the float model's (the shipping bar). 53 dB because a deviation
    uncorrelated with the float model's own error (36 dB on this view) adds its squared error:
    10 log10(1 + 10^-1.7) = 0.09 dB. Clamped sRGB hides highlights (percentile ranges clip the activations
    of a few bright pixels), so the HDR error, relMSE against the reference, may grow by 5 % at most.
    (Calibrated on this same render: a test of the tooling, not of how well calibration generalises,
    which the held-out evaluation measures.)"""
    passes, reference = first_layer(NOISY), first_layer(REFERENCE)["combined"][..., :3]
    float_beauty = load_model(FLOAT_MODEL, "cpu").denoise(passes).beauty[..., :3]
    int8_beauty = load_model(int8_model, "cpu").denoise(passes).beauty[..., :3]
    assert psnr(to_srgb(int8_beauty), to_srgb(float_beauty)) > 53
    float_psnr, int8_psnr = psnr(to_srgb(float_beauty), to_srgb(reference)), psnr(to_srgb(int8_beauty),
                                                                                  to_srgb(reference))
    assert abs(int8_psnr - float_psnr) <= 0.1
    assert relmse(int8_beauty, reference) <= 1.05 * relmse(float_beauty, reference)


def test_models_without_precision_are_float32_and_unknown_precisions_refused(tmp_path):
    assert read_model_info(save_model(tmp_path, "guided")).precision == "float32"
    assert read_model_info(save_model(tmp_path, "guided", name="q", precision="int8")).precision == "int8"
    with pytest.raises(DenoiserError, match="precision must be one of float32, int8, got 'int4'"):
        read_model_info(save_model(tmp_path, "guided", name="bad", precision="int4"))


def test_quantize_refuses_bad_outputs_and_empty_calibration(tmp_path, capsys):
    empty = tmp_path / "no_renders"
    empty.mkdir()
    cases = [(FLOAT_MODEL, "is the input model"), (tmp_path / "out.txt", "must end in .onnx"),
             (tmp_path / "out.onnx", "no calibration renders found")]
    for output, message in cases:
        assert quantize.main([str(FLOAT_MODEL), "-o", str(output), "--calibration", str(empty)]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("quantize: error: ") and message in error and "\n" not in error
    assert quantize.main([str(FLOAT_MODEL), "-o", str(tmp_path / "out.onnx"), "--calibration", str(NOISY),
                          "--keep-float", "heads.", "nonsense"]) == 2
    assert "--keep-float nonsense: no convolution's name contains it" in capsys.readouterr().err
    assert not (tmp_path / "out.onnx").exists()
