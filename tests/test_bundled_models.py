"""Every model shipped in models/ loads, carries the metadata contract and really denoises a Cycles render."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from denoiser_core import load_model, read_exr
from denoiser_core.images import psnr, to_srgb
from denoiser_core.models import read_model_info
from denoiser_core.passes import DECOMPOSITION_PASSES, FEATURE_PASSES

MODELS = Path(__file__).resolve().parents[1] / "models"
SHIPPED = sorted(MODELS.glob("*.onnx"))


def test_the_fast_default_and_a_quality_preset_are_shipped():
    from training.archs.blocks import RCAB
    from training.config import load_config_json
    from training.graph import build_graph

    names = {path.stem for path in SHIPPED}
    assert {"fast", "quality"} <= names, f"models/ holds {sorted(names)}"
    # quality stays in the KPRCAN family: residual channel-attention blocks in a kernel-predicting network
    quality = build_graph(load_config_json(MODELS / "quality.json"))
    assert any(isinstance(module, RCAB) for module in quality.modules())
    assert read_model_info(MODELS / "quality.onnx").architecture in ("kprcan", "kpunet")


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_model_has_contract_weights_and_config(path):
    info = read_model_info(path)
    assert info.name == path.stem
    assert not info.needs_variance  # a user's single render has no variance passes
    assert set(DECOMPOSITION_PASSES) | set(FEATURE_PASSES) <= set(info.required_passes)
    assert info.parameters > 0 and info.receptive_radius > 0 and info.training_data
    assert path.with_suffix(".safetensors").is_file()
    config = json.loads(path.with_suffix(".json").read_text())
    assert config["model"]["type"] == info.architecture


@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_model_denoises_a_render_closer_to_its_reference(path, cycles_exr, cycles_reference_exr):
    noisy = read_exr(cycles_exr).canonical_passes("ViewLayer")
    reference = read_exr(cycles_reference_exr).canonical_passes("ViewLayer")["combined"][..., :3]
    result = load_model(str(path), device="cpu").denoise(noisy, tile=32)
    before = psnr(to_srgb(noisy["combined"]), to_srgb(reference))
    after = psnr(to_srgb(result.beauty), to_srgb(reference))
    assert np.isfinite(result.beauty).all()
    assert after > before + 1.5, (before, after)  # clearly better: 1.5 dB is a 30 % lower MSE


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_model_config_rebuilds_the_graph_it_declares(path):
    """The receptive radius is derived from the blocks the config builds: it must still be the one the
    shipped model declares (tiles overlap by it), and the weights must still fit the graph."""
    from safetensors.torch import load_file

    from training.config import load_config_json
    from training.graph import build_graph

    info = read_model_info(path)
    graph = build_graph(load_config_json(path.with_suffix(".json")))
    assert (graph.receptive_radius, graph.size_multiple) == (info.receptive_radius, info.size_multiple)
    graph.load_state_dict(load_file(str(path.with_suffix(".safetensors"))))  # strict: same modules
