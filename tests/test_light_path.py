"""The specular light path (``graph.specular_light_path``, format version 6): the specular network filters
the glossy and transmission radiance and, with kernels of its own, that light with its colour (GlossCol +
TransCol) divided out, and blends the two per pixel; the core feeds the colour as the ``specular_color``
input and multiplies the output light by it, as for any demodulating model.

Checked on real components: torch graphs, a real Cycles render packed into shards, and a tiny model
trained, exported and run by onnxruntime through ``denoiser_core``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from onnx_models import save_model

from denoiser_core import DenoiserError, load_model
from denoiser_core.models import read_model_info
from denoiser_core.passes import decompose
from tests.training_helpers import graphs_from_plain_weights, tiny_config, untrained_run
from training.checkpoint import load_weights
from training.config import config_from_dict
from training.graph import PATH_WEIGHT_START, build_graph, example_inputs

VOLUME = ["data.kind=shards", "data.train=[x]", "data.separate_volume=true"]
LIGHT_PATH = [*VOLUME, "data.demodulate_specular=true", "graph.specular_light_path=true"]


def test_light_path_metadata_is_read_and_checked(tmp_path):
    """The specular_color input comes with demodulate_specular and format version 6."""
    inputs = json.dumps(["diffuse", "specular", "albedo", "normal", "depth", "specular_color"])

    def save(name, **overrides):
        return save_model(tmp_path, "identity", name=name, inputs=inputs, **overrides)

    info = read_model_info(save("light", format_version="6", demodulate_specular="true"))
    assert info.demodulate_specular and "specular_color" in info.inputs
    assert "specular as light or radiance per pixel" in info.summary()
    for name, overrides, message in [
            ("old", {"format_version": "5", "demodulate_specular": "true"}, "needs .*format_version 6"),
            ("radiance", {"format_version": "6"}, "specular_color input needs demodulate_specular true"),
            ("newer", {"format_version": "7", "demodulate_specular": "true"}, "format version 7.*update")]:
        with pytest.raises(DenoiserError, match=message):
            read_model_info(save(name, **overrides))


def test_the_config_refuses_a_light_path_without_demodulated_shards():
    config = tiny_config("fast", LIGHT_PATH)
    broken = config.to_dict()
    broken["data"]["demodulate_specular"] = False
    with pytest.raises(ValueError, match="specular_light_path needs data.demodulate_specular"):
        config_from_dict(broken)


def _light_inputs(radiance_inputs: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """The same radiance as a demodulating core feeds it: light and a specular colour (1 below 0.02)."""
    g = torch.Generator().manual_seed(seed)
    colour = torch.rand(radiance_inputs["specular"].shape, generator=g)
    colour = torch.where(colour > 0.02, colour, torch.ones_like(colour))
    return {**radiance_inputs, "specular": radiance_inputs["specular"] / colour, "specular_color": colour}


def test_a_light_path_graph_starts_from_weights_without_it(tmp_path):
    """Weights of a plain graph and of a volume graph load with the light path's weight at its start and
    the rest as they were: with that weight set to 0 the graph gives the radiance those weights give."""
    plain, light_path = graphs_from_plain_weights(LIGHT_PATH, tmp_path)
    assert light_path.input_names[-1] == "specular_color"
    assert light_path.feature_channels == plain.feature_channels + 9 + 9  # volume, colour, differences
    volume_config = tiny_config("fast", VOLUME)
    volume_run = untrained_run(volume_config, tmp_path / "volume", seed=3)
    volume_graph = build_graph(volume_config).eval()
    load_weights(volume_run.weights_path("latest"), volume_graph)
    from_volume = build_graph(tiny_config("fast", LIGHT_PATH)).eval()
    load_weights(volume_run.weights_path("latest"), from_volume)
    head = from_volume.nets["specular"].heads[0]
    assert torch.all(head.bias[-1] == PATH_WEIGHT_START) and not head.weight[-1].any()
    assert 0.05 < torch.sigmoid(torch.tensor(PATH_WEIGHT_START)) < 0.2  # near the image, with a gradient
    with torch.no_grad():
        for graph in (light_path, from_volume):
            graph.nets["specular"].heads[0].bias[-1] = -30.0

    inputs = example_inputs(volume_graph, 32, 48, seed=5)
    light_inputs = _light_inputs(inputs, seed=6)
    with torch.no_grad():
        for start, graph, volume in ((plain, light_path, torch.zeros_like(inputs["volume"])),
                                     (volume_graph, from_volume, inputs["volume"])):
            fed = {**inputs, "volume": volume}
            expected = start(**{k: v for k, v in fed.items() if k in start.input_names})
            got = graph(**{**light_inputs, "volume": volume})
            torch.testing.assert_close(got[0], expected[0], atol=1e-6, rtol=0)  # diffuse light
            torch.testing.assert_close(got[1] * light_inputs["specular_color"], expected[1], atol=1e-5,
                                       rtol=1e-5)
            # the volume buffer: none, or as the volume graph filters it
            filtered_volume = expected[2] if len(expected) > 2 else volume
            torch.testing.assert_close(got[2], filtered_volume, atol=1e-6, rtol=0)


def test_the_light_path_keeps_a_texture_that_the_colour_carries(tmp_path):
    """Flat light under a textured colour (a rough glossy brick wall lit evenly): the light path gives the
    flat light back (normalised kernels), so the texture is multiplied back whole; the radiance path
    filters the texture itself and blurs it."""
    _plain, graph = graphs_from_plain_weights(LIGHT_PATH, tmp_path)
    inputs = example_inputs(graph, 32, 48, seed=7)
    stripes = (torch.arange(48) // 2 % 2).float().expand(1, 3, 32, 48)
    colour = 0.1 + 0.8 * stripes
    flat = {**inputs, "specular": torch.full_like(colour, 0.5), "specular_color": colour,
            "volume": torch.zeros_like(colour)}
    head = graph.nets["specular"].heads[0]
    results = {}
    with torch.no_grad():
        for weight_logit in (-30.0, 30.0):  # the radiance path, the light path
            head.bias[-1] = weight_logit
            head.weight[-1] = 0
            results[weight_logit] = graph(**flat)[1] * colour
    inside = (..., slice(10, -10), slice(10, -10))  # the kernels zero-pad at the image's edge
    torch.testing.assert_close(results[30.0][inside], 0.5 * colour[inside], atol=1e-5, rtol=1e-5)
    assert (results[-30.0] - 0.5 * colour)[inside].abs().max() > 0.05  # untrained kernels blur the stripes


@pytest.fixture(scope="module")
def light_views(datagen_tiny_run, tmp_path_factory):
    """One tiny rendered view packed whole with the volume apart and the specular light demodulated."""
    from tests.training_helpers import pack_one_view

    work = tmp_path_factory.mktemp("light")
    record = pack_one_view(datagen_tiny_run, work, [{"denoise_residual": True, "separate_volume": True,
                                                     "demodulate_specular": True}])
    return work, record


@pytest.mark.slow
def test_tiny_light_path_model_trains_exports_and_runs_in_the_core_as_in_torch(light_views, tmp_path):
    from training.datagen.exr_io import read_passes
    from training.export import export_run
    from training.train import train

    work, record = light_views
    folder = str(work / "packed" / "train-full-d-r-v")
    config = tiny_config("fast", ["data.kind=shards", "data.denoise_residual=true",
                                  "data.separate_volume=true", "data.demodulate_specular=true",
                                  "graph.specular_light_path=true",
                                  "train.steps=4", "train.val_interval=2", "train.checkpoint_interval=2",
                                  "data.batch_size=2", "data.val_batches=1"])
    config.data.train, config.data.val, config.data.options = [folder], [folder], {}
    train(config, tmp_path / "run", progress=False)
    path = export_run(tmp_path / "run", tmp_path / "models" / "light.onnx")
    info = read_model_info(path)
    assert info.metadata["kprcan.format_version"] == "6" and "specular_color" in info.inputs

    view = work / record["dir"]
    a, b = read_passes(str(view / "spp8_a.exr")), read_passes(str(view / "spp8_b.exr"))
    passes = {k: (a[k] + b[k]) / 2 for k in a}
    denoiser = load_model(str(path), device="cpu")
    result = denoiser.denoise(passes)
    np.testing.assert_allclose(denoiser.denoise(passes, tile=16).beauty, result.beauty, atol=1e-4, rtol=1e-4)
    parts = decompose(passes, True, True, separate_volume=True)
    graph = build_graph(config).eval()
    load_weights(path.with_suffix(".safetensors"), graph)
    inputs = {name: torch.from_numpy(np.ascontiguousarray(getattr(parts, name).transpose(2, 0, 1)))[None]
              for name in graph.input_names}
    with torch.no_grad():
        diffuse, light, volume = (t[0].numpy().transpose(1, 2, 0) for t in graph(**inputs))
    for name, expected in (("diffuse", diffuse), ("specular", light), ("volume", volume)):
        np.testing.assert_allclose(result.outputs[f"{name}_denoised"], expected, atol=1e-4, rtol=1e-4)
    recombined = parts.diffuse_color * diffuse + parts.specular_color * light + volume + parts.residual
    np.testing.assert_allclose(result.beauty[..., :3], recombined, atol=1e-4, rtol=1e-4)


def test_the_light_path_loss_trains_its_kernels_whatever_the_weight(tmp_path):
    """``loss.light_path`` scores the light path's own output: its kernels learn even where the blend
    gives the path no weight, which the blended loss alone cannot teach them."""
    from training.losses import DenoiseLoss, stage_loss

    _plain, graph = graphs_from_plain_weights(LIGHT_PATH, tmp_path)
    graph.train()
    inputs = _light_inputs(example_inputs(graph, 32, 48, seed=8), seed=9)
    batch = {**inputs, "diffuse_color": torch.full_like(inputs["specular"], 0.5),
             **{f"{c}_reference": 0.5 * inputs[c] for c in ("diffuse", "specular", "volume")}}
    head = graph.nets["specular"].heads[0]
    light_rows = slice(2 * (head.out_channels - 1) // 3, head.out_channels - 1)  # the third signal's
    gradients = {}
    for weight in (0.0, 1.0):
        config = tiny_config("fast", [*LIGHT_PATH, f"loss.light_path={weight}"])
        with torch.no_grad():
            head.bias[-1] = -30.0  # the blend gives the light path no weight
        graph.zero_grad()
        stage_loss(DenoiseLoss(config.loss), graph, graph.denoise(batch), batch, "components").backward()
        gradients[weight] = head.weight.grad[light_rows].abs().sum().item()
    assert gradients[1.0] > 1e-3 and gradients[0.0] < 1e-9 * gradients[1.0]
