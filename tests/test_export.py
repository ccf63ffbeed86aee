"""Export: torch/onnxruntime parity for every architecture, the metadata contract, exact tiling."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from denoiser_core.models import read_model_info
from denoiser_core.passes import DECOMPOSITION_PASSES, FEATURE_PASSES
from tests.training_helpers import ALL_CONFIGS, REPO, tiny_config, untrained_run
from training.archs.blocks import ChannelAttention, first_convolution
from training.checkpoint import load_weights
from training.config import load_config_json
from training.export import export_run
from training.graph import build_graph, example_inputs


def exported(name: str, tmp_path, overrides: list[str] | None = None):
    config = tiny_config(name, overrides)
    run = untrained_run(config, tmp_path / "run")
    path = export_run(run.path, tmp_path / "models" / f"{name}.onnx")
    graph = build_graph(config)
    load_weights(path.with_suffix(".safetensors"), graph)
    return path, graph.eval(), ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_both(graph, session, height: int, width: int, seed: int = 3):
    inputs = example_inputs(graph, height, width, seed)
    with torch.no_grad():
        expected = [t.numpy() for t in graph(**inputs)]
    return expected, session.run(None, {k: v.numpy() for k, v in inputs.items()}), inputs


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_onnxruntime_matches_torch(name, tmp_path):
    _path, graph, session = exported(name, tmp_path)
    assert 40 % graph.size_multiple == 0 and 48 % graph.size_multiple == 0
    expected, actual, _ = run_both(graph, session, 40, 48)
    for e, a in zip(expected, actual, strict=True):
        assert a.shape == e.shape == (1, 3, 40, 48)
        np.testing.assert_allclose(a, e, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["fast", "kpcn"])
def test_export_pads_the_first_convolutions_to_the_nchwc_block_without_changing_the_output(name, tmp_path):
    import onnx

    from training.export import NCHWC_BLOCK, exported_graph

    path, graph, _session = exported(name, tmp_path)
    # colour + features (their differences are folded into the first convolution), 10 channels: the
    # padding has something to do
    assert graph.differences_folded and graph.network_input_channels % NCHWC_BLOCK
    padded = exported_graph(graph)
    inputs = example_inputs(graph, 32, 48, seed=5)
    with torch.no_grad():
        for a, b in zip(graph(**inputs), padded(**inputs), strict=True):
            np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-6, rtol=0)
    model = onnx.load(str(path))
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    size = first_convolution(graph.nets["diffuse"])[1].kernel_size[0] + 1  # the folded kernel
    rounded_up = -(-graph.network_input_channels // NCHWC_BLOCK) * NCHWC_BLOCK
    first_inputs = [shapes[node.input[1]][1] for node in model.graph.node
                    if node.op_type == "Conv" and node.input[1] in shapes
                    and shapes[node.input[1]][2:] == [size, size]]
    assert first_inputs == [rounded_up] * 2  # one first convolution per component network
    # the weights file keeps the unpadded, unfolded network (train.py --init and the parity test load it)
    assert graph.input_padding == 0 and padded.input_padding == rounded_up - graph.network_input_channels
    assert first_convolution(graph.nets["diffuse"])[1].in_channels == graph.feature_channels
    assert graph.feature_channels == 3 * graph.network_input_channels  # [x, dx, dy]


def test_exported_model_carries_the_metadata_contract(tmp_path):
    path, graph, session = exported("fast", tmp_path)
    info = read_model_info(path)  # the inference core's own validation of the contract
    assert info.name == "fast" and info.architecture == "kpunet" and not info.needs_variance
    assert not info.denoise_residual and info.metadata["kprcan.format_version"] == "1"
    assert list(info.required_passes) == list(DECOMPOSITION_PASSES) + list(FEATURE_PASSES)
    assert list(info.inputs) == ["diffuse", "specular", "albedo", "normal", "depth"]
    assert list(info.outputs) == ["diffuse_denoised", "specular_denoised"]
    assert (info.receptive_radius, info.size_multiple) == (graph.receptive_radius, graph.size_multiple)
    assert info.parameters == sum(p.numel() for p in graph.parameters())
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["kprcan.format_version"] == "1" and "synthetic" in meta["kprcan.training_data"]
    assert json.loads(meta["kprcan.config"]) == load_config_json(path.with_suffix(".json")).to_dict()
    _expected, actual, _ = run_both(graph, session, 24, 32)  # any multiple of size_multiple works
    assert all(np.isfinite(a).all() and a.shape == (1, 3, 24, 32) for a in actual)


def test_variance_model_declares_and_takes_the_variance_inputs(tmp_path):
    overrides = ["graph.use_variance=true", "data.kind=shards", "data.denoise_residual=true"]
    path, graph, session = exported("kpcn", tmp_path, overrides)
    info = read_model_info(path)
    assert info.needs_variance and info.inputs[-2:] == ("diffuse_variance", "specular_variance")
    assert info.denoise_residual  # from data.denoise_residual, which training checks against the shards
    # a kprcan that reads only version 1 refuses the model instead of feeding it the wrong specular buffer
    assert session.get_modelmeta().custom_metadata_map["kprcan.format_version"] == "2"
    expected, actual, _ = run_both(graph, session, 16, 16)
    np.testing.assert_allclose(actual[1], expected[1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["kpcn", "kprcan", "fast"])
def test_tiles_match_the_full_frame_away_from_the_border(name, tmp_path):
    """Premise of tiled inference: a crop's output equals the full output's crop, except within
    receptive_radius of the crop's border."""
    _path, graph, session = exported(name, tmp_path)
    radius, multiple = graph.receptive_radius, graph.size_multiple
    top, left = 2 * multiple, 3 * multiple  # crops start on the size_multiple grid, as the core's tiles do
    size = -(-(2 * radius + 2 * multiple) // multiple) * multiple
    full_h, full_w = top + size + 2 * multiple, left + size + multiple
    _e, full, inputs = run_both(graph, session, full_h, full_w)
    crop = {k: np.ascontiguousarray(v.numpy()[..., top:top + size, left:left + size])
            for k, v in inputs.items()}
    tiled = session.run(None, crop)
    inner = slice(radius, size - radius)
    for whole, part in zip(full, tiled, strict=True):
        reference = whole[..., top:top + size, left:left + size]
        np.testing.assert_allclose(part[..., inner, inner], reference[..., inner, inner], atol=1e-5, rtol=0)
        assert np.abs(part - reference).max() > 1e-4  # the border does differ: the check can fail


def test_global_attention_pooling_is_not_tile_exact(tmp_path):
    """Why ``attention_pool: local`` is the default: global pooling sees the whole tile."""
    config = tiny_config("kprcan_global")
    graph = build_graph(config).eval()
    with torch.no_grad():  # make the attention matter as much as a trained one's may
        for module in graph.modules():
            if isinstance(module, ChannelAttention):
                module.reduce.weight.mul_(30)
                module.expand.weight.mul_(30)
    run = untrained_run(config, tmp_path / "run")
    run.save("latest", graph, run.load_state("latest"))
    path = export_run(run.path, tmp_path / "global.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {k: v.numpy() for k, v in example_inputs(graph, 48, 48).items()}
    for name in ("diffuse", "specular", "albedo"):
        inputs[name][..., 32:, :] *= 20  # the rest of the frame differs: its mean changes the attention
    full = session.run(None, inputs)
    tiled = session.run(None, {k: np.ascontiguousarray(v[..., :32, :32]) for k, v in inputs.items()})
    assert np.abs(tiled[0][..., 14:18, 14:18] - full[0][..., 14:18, 14:18]).max() > 1e-4


def test_export_script_writes_model_weights_and_config_and_rejects_bad_runs(tmp_path):
    config = tiny_config("fast")
    run = untrained_run(config, tmp_path / "run")
    out = tmp_path / "models" / "mine.onnx"
    result = subprocess.run([sys.executable, "-m", "training.export", str(run.path), "-o", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert out.exists() and out.with_suffix(".safetensors").exists()
    assert json.loads(out.with_suffix(".json").read_text()) == config.to_dict()
    assert read_model_info(out).name == "mine"
    bad = subprocess.run([sys.executable, "-m", "training.export", str(tmp_path / "missing")], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not a run folder" in bad.stderr
    # a new run can start from the exported weights, its config taken from the .json beside them
    weights = str(out.with_suffix(".safetensors"))
    again = subprocess.run([sys.executable, "training/train.py", "--init", weights,
                            "--run-dir", str(tmp_path / "again"), "--no-progress", "--set", "train.steps=2"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert load_config_json(tmp_path / "again" / "config.json").model == config.model
