"""Volume light apart (``separate_volume``, format version 5): volume light and, with ``denoise_residual``,
the residual form a buffer of their own, ``volume``, which the specular network filters with kernels of its
own; the specular buffer then holds only glossy and transmission light, which a demodulating model divides
by Glossy + Transmission Color without dividing volume light by that (noisy, behind fog) colour.

Checked on real components: real Cycles renders (bpy 4.5 and 5.0, a scene with a fog cube), torch graphs,
packed shards, and a tiny model trained, exported and run by onnxruntime through ``denoiser_core``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from onnx_models import save_model

from denoiser_core import DenoiserError, load_model, read_exr
from denoiser_core.models import VOLUME_OUTPUT, read_model_info
from denoiser_core.passes import decompose, recombine, sanitize
from tests.training_helpers import graphs_from_plain_weights, tiny_config
from training.checkpoint import load_weights
from training.graph import build_graph, example_inputs
from training.losses import DenoiseLoss, stage_loss

RENDERS = ["cycles_exr", "cycles_exr_bpy5"]
APART = ["data.kind=shards", "data.train=[x]", "data.separate_volume=true"]


@pytest.mark.slow
@pytest.mark.parametrize("render", RENDERS)
@pytest.mark.parametrize("denoise_residual", [False, True])
@pytest.mark.parametrize("demodulate", [False, True])
def test_volume_apart_recombines_to_the_beauty_on_a_real_render(render, denoise_residual, demodulate,
                                                                 request):
    passes = read_exr(request.getfixturevalue(render)).canonical_passes("ViewLayer")
    combined = sanitize(passes["combined"])
    plain = decompose(passes, denoise_residual)
    apart = decompose(passes, denoise_residual, demodulate, separate_volume=True)
    assert plain.volume is None and apart.volume is not None
    np.testing.assert_allclose(recombine(apart, apart.diffuse, apart.specular, apart.volume), combined,
                               rtol=1e-5, atol=1e-5)
    volume_light = sanitize(passes["volume_direct"]) + sanitize(passes["volume_indirect"])
    assert (volume_light.sum(-1) > 1e-3).mean() > 0.02  # the fog cube (about 5 % of the pixels)
    rest = decompose(passes).residual  # emission, environment, what no pass covers
    expected_volume = volume_light + (rest if denoise_residual else 0.0)
    np.testing.assert_allclose(apart.volume, expected_volume, rtol=1e-5, atol=1e-6)
    # together the two buffers are the plain specular buffer; only glossy and transmission are divided
    np.testing.assert_allclose(apart.specular_color * apart.specular + apart.volume, plain.specular,
                               rtol=1e-5, atol=1e-5)
    glossy = sanitize(passes["glossy_color"]) * (sanitize(passes["glossy_direct"])
                                                 + sanitize(passes["glossy_indirect"]))
    transmission = sanitize(passes["transmission_color"]) * (sanitize(passes["transmission_direct"])
                                                             + sanitize(passes["transmission_indirect"]))
    np.testing.assert_allclose(apart.specular_color * apart.specular, glossy + transmission, rtol=1e-5,
                               atol=1e-5)
    if denoise_residual:  # the rest joins the volume buffer, not the specular one
        assert not apart.residual.any() and np.abs(rest).max() > 1e-2
    else:
        np.testing.assert_allclose(apart.residual, plain.residual, rtol=1e-5, atol=1e-5)
    for name in ("diffuse_color", "albedo", "normal", "depth", "alpha"):
        np.testing.assert_array_equal(getattr(apart, name), getattr(plain, name))
    # the same diffuse light (the covariance fold adds the residual's terms in another order)
    np.testing.assert_allclose(apart.diffuse, plain.diffuse, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="volume buffer exactly when"):
        recombine(apart, apart.diffuse, apart.specular)


def test_volume_metadata_is_read_and_checked(tmp_path):
    """Version 5 declares the volume input and output together; older versions cannot."""
    def save(name, **overrides):
        return save_model(tmp_path, "identity", name=name, **overrides)

    outputs = json.dumps(["diffuse_denoised", "specular_denoised", VOLUME_OUTPUT])
    inputs = json.dumps(["diffuse", "specular", "albedo", "normal", "depth", "volume"])
    info = read_model_info(save("apart", inputs=inputs, outputs=outputs, format_version="5"))
    assert info.separates_volume and "volume light apart" in info.summary()
    assert not read_model_info(save("plain")).separates_volume
    for name, overrides, message in [
            ("old", {"inputs": inputs, "outputs": outputs, "format_version": "4"},
             "volume_denoised needs format_version 5"),
            ("no-input", {"outputs": outputs, "format_version": "5"},
             "takes the volume input exactly when it outputs volume_denoised"),
            ("newer", {"format_version": "7"}, "format version 7.*update kprcan")]:
        with pytest.raises(DenoiserError, match=message):
            read_model_info(save(name, **overrides))


def test_a_volume_graph_starts_from_plain_weights_as_the_plain_model(tmp_path):
    """Loaded from weights without the split, the specular network sees the sum of the two buffers, as
    before, and filters each with the kernels it predicted for that sum: a buffer held wholly by one part
    comes out as the plain model's."""
    graphs = graphs_from_plain_weights(APART, tmp_path)
    apart = graphs[1]
    assert apart.input_names[-1] == "volume" and apart.output_names[-1] == VOLUME_OUTPUT
    assert apart.feature_channels == graphs[0].feature_channels + 9  # the volume and its differences
    inputs = example_inputs(apart, 32, 48, seed=5)
    buffer, nothing = inputs["specular"], torch.zeros_like(inputs["specular"])
    with torch.no_grad():
        light, specular = graphs[0](**{k: v for k, v in inputs.items() if k != "volume"})
        for glossy, volume in ((buffer, nothing), (nothing, buffer)):
            split = {**inputs, "specular": glossy, "volume": volume}
            apart_light, apart_specular, apart_volume = apart(**split)
            torch.testing.assert_close(apart_light, light, atol=1e-6, rtol=0)
            torch.testing.assert_close(apart_specular + apart_volume, specular, atol=1e-6, rtol=0)
            assert not (apart_volume if volume is nothing else apart_specular).any()


def test_the_loss_trains_the_volume_buffer_in_both_stages():
    config = tiny_config("fast", APART)
    graph = build_graph(config)
    shape = (1, 3, 16, 16)
    # a beauty below 1 with either volume: clamped sRGB has a gradient there
    batch = {"diffuse_reference": torch.full(shape, 0.4), "specular_reference": torch.full(shape, 0.05),
             "diffuse_color": torch.full(shape, 0.5), "volume_reference": torch.full(shape, 0.3),
             "volume": torch.rand(shape)}
    outputs = {"diffuse": torch.full(shape, 0.4), "specular": torch.full(shape, 0.05)}
    loss = DenoiseLoss(config.loss)
    for target in ("components", "joint"):
        for volume, expect_zero in ((torch.full(shape, 0.3), True), (torch.full(shape, 0.6), False)):
            volume = volume.requires_grad_(True)
            step = {**outputs, "volume": volume}
            step.update({f"{c}_space": graph.to_space(c, step[c]) for c in ("diffuse", "specular", "volume")})
            value = stage_loss(loss, graph, step, batch, target)
            assert (value.item() < 1e-6) == expect_zero, (target, value.item())
            if not expect_zero:
                value.backward()
                assert volume.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def volume_views(datagen_tiny_run, tmp_path_factory):
    """One tiny rendered view packed whole twice: with the volume in the specular buffer (train-full-r)
    and apart (train-full-r-v)."""
    from tests.training_helpers import pack_one_view

    work = tmp_path_factory.mktemp("volume")
    record = pack_one_view(datagen_tiny_run, work, [{"denoise_residual": True},
                                                    {"denoise_residual": True, "separate_volume": True}])
    return work, record


@pytest.mark.slow
def test_volume_shards_hold_the_volume_apart_and_recombine_as_before(volume_views):
    from training.data import ShardDataset
    from training.losses import recombine_batch, reference_beauty

    work, _record = volume_views
    folder = work / "packed" / "train-full-r-v"
    index = json.loads((folder / "index.json").read_text())
    assert index["separate_volume"] is True and ["volume_reference", 3] in index["channels"]
    plain_set = ShardDataset(work / "packed" / "train-full-r", patch_size=None, augment=False)
    apart_set = ShardDataset(folder, patch_size=None, augment=False)
    assert apart_set.separate_volume and not plain_set.separate_volume
    for i in range(len(apart_set)):
        plain, apart = plain_set[i], apart_set[i]
        for buffer in ("", "_reference"):  # the two buffers add up to the specular buffer without the split
            np.testing.assert_allclose((apart[f"specular{buffer}"] + apart[f"volume{buffer}"]).numpy(),
                                       plain[f"specular{buffer}"].numpy(), rtol=4e-3, atol=2e-3)
        assert apart["volume"].abs().sum() > 0
        batches = [{k: v[None] for k, v in sample.items()} for sample in (plain, apart)]
        for make in (lambda b: recombine_batch(b, b["diffuse"], b["specular"]), reference_beauty):
            np.testing.assert_allclose(make(batches[1]).numpy(), make(batches[0]).numpy(), rtol=4e-3,
                                       atol=2e-3)


@pytest.mark.slow
def test_tiny_volume_model_trains_exports_and_runs_in_the_core_as_in_torch(volume_views, tmp_path):
    from training.datagen.exr_io import read_passes
    from training.export import export_run
    from training.train import train

    work, record = volume_views
    folder = str(work / "packed" / "train-full-r-v")
    config = tiny_config("fast", ["data.kind=shards", "data.denoise_residual=true",
                                  "data.separate_volume=true", "train.steps=4", "train.val_interval=2",
                                  "train.checkpoint_interval=2", "data.batch_size=2", "data.val_batches=1"])
    config.data.train, config.data.val, config.data.options = [folder], [folder], {}
    train(config, tmp_path / "run", progress=False)
    path = export_run(tmp_path / "run", tmp_path / "models" / "apart.onnx")
    info = read_model_info(path)
    assert info.separates_volume and info.metadata["kprcan.format_version"] == "5"

    view = work / record["dir"]
    a, b = read_passes(str(view / "spp8_a.exr")), read_passes(str(view / "spp8_b.exr"))
    passes = {k: (a[k] + b[k]) / 2 for k in a}
    denoiser = load_model(str(path), device="cpu")
    result = denoiser.denoise(passes)
    parts = decompose(passes, True, separate_volume=True)
    # by windows (each decomposed and recombined on its own), the same image
    np.testing.assert_allclose(denoiser.denoise(passes, tile=16).beauty, result.beauty, atol=1e-4, rtol=1e-4)
    graph = build_graph(config).eval()
    load_weights(path.with_suffix(".safetensors"), graph)
    inputs = {name: torch.from_numpy(np.ascontiguousarray(getattr(parts, name).transpose(2, 0, 1)))[None]
              for name in graph.input_names}
    with torch.no_grad():
        diffuse, specular, volume = (t[0].numpy().transpose(1, 2, 0) for t in graph(**inputs))
    for name, expected in (("diffuse", diffuse), ("specular", specular), ("volume", volume)):
        np.testing.assert_allclose(result.outputs[f"{name}_denoised"], expected, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(result.specular, specular + volume, atol=1e-4, rtol=1e-4)
    recombined = parts.diffuse_color * diffuse + specular + volume + parts.residual
    np.testing.assert_allclose(result.beauty[..., :3], recombined, atol=1e-4, rtol=1e-4)
    assert np.abs(volume - parts.volume).max() > 1e-3  # it did filter the volume


@pytest.mark.slow
@pytest.mark.parametrize("demodulate", [False, True])
def test_temporal_mode_filters_the_volume_buffer_with_the_specular_one(cycles_exr, demodulate):
    """The volume buffer joins the specular part the history keeps, as radiance (never divided by Glossy
    Color): a model with volume light apart gets the temporal result a model with it in the specular
    buffer gets from the same radiance, and a volume that changed between two frames is blended with its
    history."""
    from denoiser_core.inference import DenoiseResult
    from denoiser_core.temporal import FrameGuides, filter_result

    passes = read_exr(cycles_exr).canonical_passes("ViewLayer")
    plain, apart = decompose(passes, True), decompose(passes, True, demodulate, separate_volume=True)
    guides = FrameGuides(apart.depth, apart.normal, np.zeros(apart.depth.shape[:2] + (2,), np.float32))
    results = {}
    for name, parts, frames in (
            ("plain", plain, [{"specular_denoised": plain.specular},
                              {"specular_denoised": plain.specular + 0.1 * apart.volume}]),
            ("apart", apart, [{"specular_denoised": apart.specular, VOLUME_OUTPUT: apart.volume},
                              {"specular_denoised": apart.specular, VOLUME_OUTPUT: 1.1 * apart.volume}])):
        history = None
        for outputs in frames:
            per_frame = DenoiseResult.from_parts(parts, {"diffuse_denoised": parts.diffuse, **outputs})
            filtered, step = filter_result(per_frame, guides, history)
            history = step.history
        assert step.history_fraction > 0.5
        results[name] = (per_frame, filtered)
    assert not results["apart"][1].outputs[VOLUME_OUTPUT].any()
    np.testing.assert_allclose(results["apart"][0].beauty, results["plain"][0].beauty, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(results["apart"][1].beauty, results["plain"][1].beauty, rtol=1e-4, atol=1e-4)
    fog = apart.volume.sum(-1) > 1e-2
    changed = np.abs(results["apart"][1].beauty - results["apart"][0].beauty)[fog].max(-1)
    assert (changed > 1e-4).mean() > 0.5  # the history held the first frame's volume
