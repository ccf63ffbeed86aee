#!/usr/bin/env python
"""Turn a kprcan ONNX model into an int8 one with onnxruntime's static quantization (QDQ format).

    python -m training.quantize models/fast.onnx -o runs/int8/fast-int8.onnx \\
        --calibration data/renders/val

Only the convolutions are quantized: their input activations to uint8 (asymmetric), their weights to int8
(symmetric, per output channel unless ``--per-tensor``), their biases to int32. A ReLU right after a
convolution is folded into that convolution's output quantization (its zero point is 0, so clamping to
the uint8 range is the ReLU). Everything else stays float32: the pre-processing (log transform, feature
normalisation), upsampling and skip additions between the convolutions, the softmax over each predicted
kernel, the kernel application and the post-processing. (onnxruntime's CPU optimiser fuses each
DequantizeLinear -> Conv -> QuantizeLinear into a QLinearConv, and runs an average pool found between two
such pairs in uint8.) Convolutions whose node name contains a ``--keep-float`` pattern stay float32.

The convolutions that read the pre-processed inputs (one per branch: the convolutions with no
convolution upstream) stay float32 unless ``--quantize-inputs``: their input stacks log1p colour with
features and gradients under one uint8 scale of 0.02 to 0.08 per step, and a dark render's log1p colour
(a few hundredths on the exterior test view) lies within a step or two of zero. Activation ranges are
the 99.99th percentile of each tensor's values by default (``--method minmax`` takes the extremes): a few
pixels of a visible light stretch the extremes 2-3x in the first layers. Both measured on `fast` and the
six 384x256 test views of docs/data.md (2026-11-27): with minmax ranges from the 128x96 validation views
that exterior view lost 7.0 dB at 16 spp (2.5 dB with the input convolutions in float); with the defaults
and the same views no test view lost more than 0.07 dB at 16 spp and 0.13 dB at 64 spp.

Calibration feeds the model exactly what inference feeds it: each render goes through
``denoiser_core.inference.Denoiser`` (pass decomposition, sanitising, tiling with the model's context)
and every window it would hand to onnxruntime is kept. ``--calibration`` takes multilayer EXR renders
and folders: in a folder, noisy renders named ``spp<N>_a.exr`` / ``spp<N>_b.exr`` (the layout
``python -m training.datagen`` writes) are averaged per sample count as ``training.evaluate`` does, and
``reference*.exr`` files are skipped. Calibrate on other renders than the ones you score.

The output keeps the model's contract metadata with ``kprcan.precision`` = ``int8``, the name
``<name>-int8`` (``--name``) and ``kprcan.quantization`` saying how it was made (docs/contract.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from denoiser_core import DenoiserError, load_model, read_exr
from denoiser_core.devices import CPU
from denoiser_core.inference import Denoiser
from denoiser_core.models import KNOWN_OUTPUTS, PREFIX, resolve_model
from denoiser_core.pipeline import denoisable_layers
from training.checkpoint import atomic_write
from training.evaluate import NOISY_NAME, mean_passes

# (onnxruntime's entropy method gave exactly minmax's ranges on `fast`, so it is not offered.)
METHODS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
# Calibration tiles: windows of tile + 2 * context pixels, as the core would cut a render that large.
# minmax keeps two numbers per tensor and window; percentile keeps every quantized tensor of every
# window until the end (about 0.2 GB per window of `fast` at 256 px).
DEFAULT_TILE = 256
DEFAULT_PERCENTILE = 99.99  # 1 value in 10 000 outside the range, both tails (onnxruntime's: 99.999)


class _FeedRecorder:
    """Stands in for the onnxruntime session of a Denoiser: keeps every window it is fed and answers
    zeros (finite, of the output shapes), so the float model need not run just to collect inputs."""

    def __init__(self) -> None:
        self.feeds: list[dict[str, np.ndarray]] = []

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.feeds.append({name: array.copy() for name, array in feeds.items()})
        batch, _, height, width = next(iter(feeds.values())).shape
        return [np.zeros((batch, KNOWN_OUTPUTS[name], height, width), np.float32) for name in names]

    def get_providers(self) -> list[str]:
        return [CPU]


class WindowReader(CalibrationDataReader):
    """The recorded windows, one feed dict at a time, as onnxruntime's calibrator asks for them."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = feeds
        self._next = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._next, None)

    def rewind(self) -> None:
        self._next = iter(self.feeds)


def calibration_renders(paths: list[Path]) -> Iterator[tuple[str, dict[str, np.ndarray] | Path]]:
    """(label, passes) for datagen view folders' noisy inputs, (label, path) for any other EXR file."""
    for path in paths:
        if path.is_file():
            yield str(path), path
            continue
        if not path.is_dir():
            raise DenoiserError(f"{path}: no such calibration file or folder")
        halves: dict[tuple[Path, int], list[Path]] = defaultdict(list)
        for exr in sorted(path.rglob("*.exr")):
            match = NOISY_NAME.match(exr.name)
            if match:
                halves[(exr.parent, int(match.group(1)))].append(exr)
            elif not exr.name.startswith("reference"):
                yield str(exr), exr
        for (folder, spp), files in sorted(halves.items()):
            yield f"{folder}/spp{spp}", mean_passes(files)


def record_windows(model: str | Path, paths: list[Path], tile: int = DEFAULT_TILE) -> tuple[
        list[dict[str, np.ndarray]], list[str]]:
    """Every window the core would feed ``model`` when denoising the calibration renders at ``tile``;
    also the labels of the renders used."""
    recorder = _FeedRecorder()
    denoiser = Denoiser(resolve_model(model), recorder)
    labels = []
    for label, render in calibration_renders(paths):
        if isinstance(render, Path):
            image = read_exr(render)
            layers = [image.canonical_passes(layer) for layer in denoisable_layers(image, denoiser)]
        else:
            layers = [render]
        for passes in layers:
            denoiser.denoise(passes, tile=tile, where=label)
        labels.append(label)
    if not recorder.feeds:
        raise DenoiserError(f"no calibration renders found in {', '.join(map(str, paths))}")
    return recorder.feeds, labels


def input_convolutions(model: onnx.ModelProto) -> set[str]:
    """Conv nodes with no Conv upstream: those that read the pre-processed inputs (log1p colours,
    features, gradients) straight from the graph's float arithmetic."""
    after_conv: set[str] = set()  # tensors computed from some convolution's output
    first = set()
    for node in model.graph.node:  # ONNX keeps nodes in topological order
        downstream = any(name in after_conv for name in node.input)
        if node.op_type == "Conv" and not downstream:
            first.add(node.name)
        if node.op_type == "Conv" or downstream:
            after_conv.update(node.output)
    return first


def convolutions(model: onnx.ModelProto, keep_float: list[str], quantize_inputs: bool = False) -> tuple[
        list[str], list[str], list[str]]:
    """Names of (Conv nodes to quantize, the ReLUs right after them, Conv nodes kept float)."""
    float_first = set() if quantize_inputs else input_convolutions(model)
    quantized, kept = [], []
    for node in model.graph.node:
        if node.op_type == "Conv":
            keep = node.name in float_first or any(pattern in node.name for pattern in keep_float)
            (kept if keep else quantized).append(node.name)
    quantized_outputs = {o for node in model.graph.node if node.name in quantized for o in node.output}
    relus = [node.name for node in model.graph.node if node.op_type == "Relu"
             and node.input[0] in quantized_outputs]
    return quantized, relus, kept


def quantize(model: str | Path, output: Path, calibration: list[Path], *, tile: int = DEFAULT_TILE,
             per_channel: bool = True, method: str = "percentile", percentile: float = DEFAULT_PERCENTILE,
             keep_float: list[str] | None = None, quantize_inputs: bool = False,
             name: str | None = None) -> dict:
    """Write the int8 model to ``output`` (atomically) and return its ``kprcan.quantization`` record."""
    info = resolve_model(model)
    output = Path(output)
    if output.suffix != ".onnx":
        raise DenoiserError(f"output {output} must end in .onnx")
    if output.resolve() == info.path:
        raise DenoiserError(f"output {output} is the input model: choose another file")
    if info.precision != "float32":
        raise DenoiserError(f"{info.path}: already {info.precision}; quantize the float32 model")
    keep_float = list(keep_float or [])
    feeds, labels = record_windows(info.path, calibration, tile)
    with tempfile.TemporaryDirectory(prefix="kprcan-quantize-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # onnxruntime's own preparation: graph optimisation and ONNX shape inference (the symbolic one is
        # for transformers and cannot follow this graph's Shape/Slice arithmetic).
        quant_pre_process(str(info.path), str(prepared), skip_symbolic_shape=True)
        convs, relus, kept = convolutions(onnx.load(str(prepared)), keep_float, quantize_inputs)
        unmatched = [pattern for pattern in keep_float if not any(pattern in conv for conv in convs + kept)]
        if unmatched:
            raise DenoiserError(f"--keep-float {' '.join(unmatched)}: no convolution's name contains it "
                                f"(names look like {convs[0] if convs else kept[0]})")
        record = {
            "tool": "onnxruntime.quantization.quantize_static, QDQ",
            "activations": "uint8 asymmetric",
            "weights": "int8 symmetric " + ("per channel" if per_channel else "per tensor"),
            "calibration": method + (f" {percentile}" if method == "percentile" else ""),
            "calibration_windows": len(feeds), "calibration_renders": labels,
            "quantized_convolutions": len(convs), "float_convolutions": kept,
        }
        quantized = Path(scratch) / "quantized.onnx"
        quantize_static(
            str(prepared), str(quantized), WindowReader(feeds), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv", "Relu"], nodes_to_quantize=convs + relus, per_channel=per_channel,
            reduce_range=False,  # VNNI (and ARM dot-product) kernels accumulate 8-bit products exactly
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=METHODS[method],
            # Ranges from both tails (percentile defaults to |x|): a folded ReLU needs its range to start
            # at 0, where a symmetric one would let negative values through.
            extra_options={"CalibTensorRangeSymmetric": False, "CalibPercentile": percentile})
        result = onnx.load(str(quantized))
        metadata = {**info.metadata, PREFIX + "name": name or f"{info.name}-int8",
                    PREFIX + "precision": "int8", PREFIX + "quantization": json.dumps(record)}
        del result.metadata_props[:]
        onnx.helper.set_model_props(result, metadata)
        onnx.checker.check_model(result)

        def write(tmp: Path) -> None:
            onnx.save(result, str(tmp))
            load_model(tmp, "cpu")  # the core must accept it (metadata and graph) before it is in place

        atomic_write(output, write)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="float32 model: a name (fast) or an .onnx path")
    parser.add_argument("-o", "--output", type=Path, required=True, help="int8 .onnx file to write")
    parser.add_argument("--calibration", type=Path, nargs="+", required=True,
                        help="EXR renders and folders of them (not the views you score)")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE,
                        help=f"tile edge the renders are fed in, plus the model's context (default "
                             f"{DEFAULT_TILE})")
    parser.add_argument("--per-tensor", action="store_true",
                        help="one weight scale per convolution instead of one per output channel")
    parser.add_argument("--method", choices=sorted(METHODS), default="percentile",
                        help="how activation ranges are calibrated (default percentile)")
    parser.add_argument("--percentile", type=float, default=DEFAULT_PERCENTILE,
                        help=f"with --method percentile: %% of values inside the range (default "
                             f"{DEFAULT_PERCENTILE})")
    parser.add_argument("--keep-float", nargs="*", default=[], metavar="PATTERN",
                        help="leave convolutions whose node name contains PATTERN in float32 (e.g. heads.)")
    parser.add_argument("--quantize-inputs", action="store_true",
                        help="quantize the convolutions that read the pre-processed inputs too (see above)")
    parser.add_argument("--name", help="model name in its metadata (default <name>-int8)")
    args = parser.parse_args(argv)
    try:
        record = quantize(args.model, args.output, args.calibration, tile=args.tile,
                          per_channel=not args.per_tensor, method=args.method, percentile=args.percentile,
                          keep_float=args.keep_float, quantize_inputs=args.quantize_inputs,
                          name=args.name)
    except DenoiserError as error:
        print(f"quantize: error: {error}", file=sys.stderr)
        return error.exit_code
    size = args.output.stat().st_size / 2**20
    print(f"wrote {args.output} ({size:.1f} MiB): {record['quantized_convolutions']} convolutions int8, "
          f"{len(record['float_convolutions'])} float32; calibrated on {record['calibration_windows']} "
          f"windows of {len(record['calibration_renders'])} renders")
    return 0


if __name__ == "__main__":
    sys.exit(main())
