"""Models that denoise Diffuse Color (``graph.denoise_diffuse_color``, format version 4): behind volumes the
colour passes are noisy, so such a model takes Diffuse Color as an input and outputs it denoised, and the
core multiplies that back instead of the render's.

Checked on real components: torch graphs, exported ONNX models run by onnxruntime, and a real Cycles
render (bpy 4.5) through ``denoiser_core``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx_models import save_model

from denoiser_core import DenoiserError, load_model, read_exr
from denoiser_core.models import COLOUR_OUTPUT, read_model_info
from denoiser_core.passes import decompose, recombine, sanitize
from tests.training_helpers import graphs_from_plain_weights, tiny_config, untrained_run
from training.checkpoint import load_weights
from training.export import export_run
from training.graph import build_graph, example_inputs
from training.losses import DenoiseLoss, diffuse_colours, stage_loss

COLOUR = ["graph.denoise_diffuse_color=true"]


def test_a_colour_graph_starts_from_plain_weights_as_the_plain_model(tmp_path):
    graphs = graphs_from_plain_weights(COLOUR, tmp_path)
    assert graphs[1].input_names[-1] == "diffuse_color" and graphs[1].output_names[-1] == COLOUR_OUTPUT
    assert graphs[1].feature_channels == graphs[0].feature_channels + 9  # colour and its differences
    inputs = example_inputs(graphs[1], 32, 48, seed=4)
    with torch.no_grad():
        light, specular = graphs[0](**{k: v for k, v in inputs.items() if k != "diffuse_color"})
        colour_light, colour_specular, colour = graphs[1](**inputs)
    torch.testing.assert_close(colour_light, light, atol=1e-6, rtol=0)
    torch.testing.assert_close(colour_specular, specular, atol=1e-6, rtol=0)
    # the colour's kernels start near the identity: the fine-tune starts from the plain model's image
    assert (colour - inputs["diffuse_color"]).abs().mean() < 0.02 * inputs["diffuse_color"].mean()


def test_the_loss_holds_a_colour_model_to_the_reference_colour_and_trains_its_colour():
    config = tiny_config("fast", COLOUR)
    graph = build_graph(config)
    shape = (1, 3, 16, 16)
    noisy_colour = torch.rand(shape) * 0.6
    batch = {"diffuse_reference": torch.full(shape, 0.8), "specular_reference": torch.full(shape, 0.05),
             "diffuse_color": noisy_colour, "diffuse_color_reference": torch.full(shape, 0.3)}
    colour = noisy_colour.clone().requires_grad_(True)
    outputs = {"diffuse": torch.full(shape, 0.8), "specular": torch.full(shape, 0.05),
               "diffuse_color": colour}
    outputs.update({f"{c}_space": graph.to_space(c, outputs[c]) for c in ("diffuse", "specular")})
    predicted, target = diffuse_colours(batch, outputs)
    assert predicted is colour and target is batch["diffuse_color_reference"]
    loss = DenoiseLoss(config.loss)
    for stage in ("components", "joint"):
        colour.grad = None
        stage_loss(loss, graph, outputs, batch, stage).backward()
        assert colour.grad.abs().sum() > 0, stage
    # the right colour costs nothing more than the light's own error (zero here)
    outputs["diffuse_color"] = batch["diffuse_color_reference"]
    assert stage_loss(loss, graph, outputs, batch, "joint").item() == pytest.approx(0.0, abs=1e-6)
    # a model without the colour output keeps the render's colour on both sides
    plain = {k: v for k, v in outputs.items() if k != "diffuse_color"}
    assert all(c is noisy_colour for c in diffuse_colours(batch, plain))


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("colour")
    config = tiny_config("fast", COLOUR)
    path = export_run(untrained_run(config, folder / "run").path, folder / "models" / "colour.onnx")
    graph = build_graph(config).eval()
    load_weights(path.with_suffix(".safetensors"), graph)
    return path, graph


def test_exported_colour_model_declares_version_4_and_matches_torch(colour_model):
    import onnxruntime as ort

    path, graph = colour_model
    info = read_model_info(path)
    assert info.metadata["kprcan.format_version"] == "4" and info.denoises_diffuse_color
    assert "diffuse_color" in info.inputs and "denoises Diffuse Color" in info.summary()
    inputs = example_inputs(graph, 32, 48, seed=6)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(graph.output_names, {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        for expected, got in zip(graph(**inputs), actual, strict=True):
            np.testing.assert_allclose(got, expected.numpy(), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_the_core_feeds_the_colour_and_multiplies_the_denoised_colour_back(colour_model, cycles_exr):
    path, _graph = colour_model
    passes = read_exr(cycles_exr).canonical_passes("ViewLayer")
    result = load_model(str(path), device="cpu").denoise(passes)
    colour = result.outputs[COLOUR_OUTPUT]
    plain = decompose(passes, denoise_residual=False)
    assert colour.shape == plain.diffuse_color.shape and np.isfinite(colour).all()
    assert not np.array_equal(colour, plain.diffuse_color)  # the network's, not the render's
    np.testing.assert_array_equal(result.parts.diffuse_color, colour)
    np.testing.assert_allclose(result.beauty, recombine(result.parts, result.outputs["diffuse_denoised"],
                                                        result.outputs["specular_denoised"]), atol=1e-6)
    np.testing.assert_allclose(result.diffuse, sanitize(colour * result.outputs["diffuse_denoised"]),
                               atol=1e-6)
    # with nothing filtered (the render's colour and light back) the recombination is Combined again
    np.testing.assert_allclose(recombine(plain, plain.diffuse, plain.specular), sanitize(passes["combined"]),
                               rtol=1e-5, atol=1e-5)


def test_colour_metadata_is_checked(tmp_path):
    def save(name, **overrides):
        return save_model(tmp_path, "identity", name=name, **overrides)

    outputs = '["diffuse_denoised", "specular_denoised", "diffuse_color_denoised"]'
    inputs = '["diffuse", "specular", "albedo", "normal", "depth", "diffuse_color"]'
    for name, overrides, message in [
            ("old", {"inputs": inputs, "outputs": outputs, "format_version": "3"}, "needs format_version 4"),
            ("no-input", {"outputs": outputs, "format_version": "4"}, "diffuse_color input exactly when"),
            ("missing", {"outputs": '["diffuse_denoised"]'}, "outputs must be")]:
        with pytest.raises(DenoiserError, match=message):
            read_model_info(save(name, **overrides))
