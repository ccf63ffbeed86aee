"""Specular demodulation (``kprcan.demodulate_specular``, format version 3): the networks see specular
*light* (the radiance divided by GlossCol + TransCol) and ``recombine`` multiplies the colour back.

Checked on real Cycles renders (bpy 4.5 and 5.0): the recombination gives back Combined with and without
demodulation and ``denoise_residual``; models of format versions 1 and 2 still load and run
bit-identically to the recombination they were built for; a demodulating model is fed light and its
Denoised Specular stays radiance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import kprcan
from exr_fixtures import read_channels
from onnx_models import save_model

from denoiser_core import DenoiserError, load_model, read_exr
from denoiser_core.models import read_model_info
from denoiser_core.passes import SPECULAR_MIN_COLOR, decompose, recombine, sanitize

REPO_MODELS = Path(__file__).resolve().parents[1] / "models"
RENDERS = ["cycles_exr", "cycles_exr_bpy5"]


def _passes(request, render: str) -> dict[str, np.ndarray]:
    return read_exr(request.getfixturevalue(render)).canonical_passes("ViewLayer")


@pytest.mark.slow
@pytest.mark.parametrize("render", RENDERS)
@pytest.mark.parametrize("denoise_residual", [False, True])
def test_demodulated_recombination_equals_the_beauty_on_a_real_render(render, denoise_residual, request):
    passes = _passes(request, render)
    combined = sanitize(passes["combined"])
    plain = decompose(passes, denoise_residual)
    demodulated = decompose(passes, denoise_residual, demodulate_specular=True)
    for parts in (plain, demodulated):
        np.testing.assert_allclose(recombine(parts, parts.diffuse, parts.specular), combined,
                                   rtol=1e-5, atol=1e-5)
    assert (plain.specular_color == 1).all()
    colour = sanitize(passes["glossy_color"]) + sanitize(passes["transmission_color"])
    divided = colour > SPECULAR_MIN_COLOR
    assert divided.mean() > 0.3  # the metal sphere, the glass and the glossy floor of the small scene
    np.testing.assert_array_equal(demodulated.specular_color, np.where(divided, colour, 1.0))
    np.testing.assert_allclose(demodulated.specular_color * demodulated.specular, plain.specular,
                               rtol=1e-6, atol=1e-6)
    # only the specular buffer changes: what is diffuse or carried through is untouched
    for name in ("diffuse", "diffuse_color", "residual", "albedo", "normal", "depth", "alpha"):
        np.testing.assert_array_equal(getattr(demodulated, name), getattr(plain, name))
    # where glossy is the only specular light, the buffer is exactly Cycles' own glossy light
    others = sanitize(passes["transmission_color"]) + sanitize(passes["volume_direct"])
    glossy_only = (divided & (others + sanitize(passes["volume_indirect"]) == 0)).all(-1)
    assert glossy_only.sum() > 100
    if not denoise_residual:
        light = sanitize(passes["glossy_direct"]) + sanitize(passes["glossy_indirect"])
        np.testing.assert_allclose(demodulated.specular[glossy_only], light[glossy_only], rtol=1e-5,
                                   atol=1e-6)


@pytest.fixture(scope="module")
def older_format_models(tmp_path_factory):
    """Models of format versions 1 and 2, exported from tiny untrained configs as the shipped models once
    were (the shipped ones are version 4 now)."""
    from tests.training_helpers import tiny_config, untrained_run
    from training.export import export_run

    folder = tmp_path_factory.mktemp("older")
    models = {}
    residual = ["data.kind=shards", "data.train=[x]", "data.denoise_residual=true"]
    for version, overrides in (("1", []), ("2", residual)):
        run = untrained_run(tiny_config("fast", overrides), folder / f"run{version}")
        models[version] = export_run(run.path, folder / f"v{version}.onnx")
    return models


@pytest.mark.slow
@pytest.mark.parametrize("render", RENDERS)
@pytest.mark.parametrize("version", ["1", "2"])
def test_older_format_models_still_load_and_run_as_before(render, version, request, older_format_models):
    """Models that predate demodulation and colour denoising load unchanged and their image is exactly the
    old recombination ``DiffCol * diffuse + specular + residual`` of their raw outputs."""
    info = read_model_info(older_format_models[version])
    assert info.metadata["kprcan.format_version"] == version and not info.denoises_diffuse_color
    assert not info.demodulate_specular and "demodulates specular" not in info.summary()
    passes = _passes(request, render)
    result = load_model(str(info.path), device="cpu").denoise(passes)
    parts = decompose(passes, info.denoise_residual)
    for name in ("diffuse", "specular", "diffuse_color", "residual", "albedo", "normal", "depth"):
        np.testing.assert_array_equal(getattr(result.parts, name), getattr(parts, name))
    diffuse, specular = result.outputs["diffuse_denoised"], result.outputs["specular_denoised"]
    old_rgb = parts.diffuse_color * diffuse + specular + parts.residual
    np.testing.assert_array_equal(result.beauty, sanitize(np.concatenate([old_rgb, parts.alpha], -1)))
    np.testing.assert_array_equal(result.specular, specular)
    assert np.abs(result.beauty - sanitize(passes["combined"])).max() > 1e-3  # it did filter


def test_demodulate_specular_metadata_is_read_and_checked(tmp_path):
    flagged = read_model_info(save_model(tmp_path, "identity", name="demod", demodulate_specular="true",
                                         format_version="3"))
    assert flagged.demodulate_specular and "demodulates specular" in flagged.summary()
    both = read_model_info(save_model(tmp_path, "identity", name="both", demodulate_specular="true",
                                      denoise_residual="true", format_version="3"))
    assert both.demodulate_specular and both.denoise_residual
    assert not read_model_info(save_model(tmp_path, "identity", name="plain")).demodulate_specular
    for name, overrides, message in [
            ("old", {"demodulate_specular": "true", "format_version": "2"},
             "demodulate_specular needs format_version 3"),
            ("yes", {"demodulate_specular": "yes", "format_version": "3"},
             "demodulate_specular must be true or false"),
            ("newer", {"format_version": "7"}, "format version 7.*update kprcan")]:
        with pytest.raises(DenoiserError, match=message):
            read_model_info(save_model(tmp_path, "identity", name=name, **overrides))


@pytest.mark.slow
@pytest.mark.parametrize("render", RENDERS)
def test_a_demodulating_model_is_fed_specular_light_and_writes_radiance(render, request, tmp_path):
    passes = _passes(request, render)
    path = save_model(tmp_path, "pooled", name="demod-pooled", demodulate_specular="true", format_version="3")
    result = load_model(str(path), device="cpu").denoise(passes)
    parts = decompose(passes, demodulate_specular=True)
    np.testing.assert_array_equal(result.parts.specular, parts.specular)
    np.testing.assert_array_equal(result.parts.specular_color, parts.specular_color)
    light = result.outputs["specular_denoised"]
    np.testing.assert_allclose(result.specular, parts.specular_color * light, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result.beauty[..., :3], result.diffuse + result.specular + parts.residual,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_cli_identity_with_demodulation_gives_back_combined(cycles_exr, tmp_path):
    models = tmp_path / "models"
    identity = save_model(models, "identity", name="demod-identity", demodulate_specular="true",
                          format_version="3")
    out = tmp_path / "identity.exr"
    result = kprcan("denoise", cycles_exr, "-o", out, "--model", identity, "--tile", "16", "-q",
                    home=tmp_path, model_path=models)
    assert result.code == 0, result.stderr
    before, after = read_channels(cycles_exr), read_channels(out)
    for channel in "RGBA":
        np.testing.assert_allclose(after[f"ViewLayer.Combined.{channel}"],
                                   before[f"ViewLayer.Combined.{channel}"], rtol=1e-4, atol=1e-4)
    # Denoised Specular is radiance (what compositing adds up), not the light the network saw
    radiance = decompose(read_exr(cycles_exr).canonical_passes("ViewLayer")).specular
    written = np.stack([after[f"ViewLayer.Denoised Specular.{c}"] for c in "RGB"], -1)
    np.testing.assert_allclose(written, radiance, rtol=1e-4, atol=1e-4)


# --- training side: packed shards, losses, a tiny trained model through export and the core -----------


@pytest.fixture(scope="module")
def demodulated_views(datagen_tiny_run, tmp_path_factory):
    """One tiny rendered view packed whole twice: plainly (train-full) and demodulated (train-full-d)."""
    from tests.training_helpers import pack_one_view

    work = tmp_path_factory.mktemp("demodulated")
    record = pack_one_view(datagen_tiny_run, work, [{}, {"demodulate_specular": True}])
    return work, record


@pytest.mark.slow
def test_demodulated_shards_hold_specular_light_and_colour(demodulated_views):
    from training.data import ShardDataset
    from training.datagen.exr_io import read_passes
    from training.losses import recombine_batch

    work, record = demodulated_views
    folder = work / "packed" / "train-full-d"
    index = json.loads((folder / "index.json").read_text())
    assert index["demodulate_specular"] is True and ["specular_color", 3] in index["channels"]
    plain_set = ShardDataset(work / "packed" / "train-full", patch_size=None, augment=False)
    demod_set = ShardDataset(folder, patch_size=None, augment=False)
    assert demod_set.demodulate_specular and not plain_set.demodulate_specular
    assert "specular_color" in demod_set[0] and "specular_color" not in plain_set[0]
    for i in range(len(demod_set)):
        plain, demod, meta = plain_set[i], demod_set[i], demod_set.meta(i)
        assert meta == plain_set.meta(i)
        view = work / record["dir"]
        a = read_passes(str(view / f"spp{meta['spp']}_a.exr"))
        b = read_passes(str(view / f"spp{meta['spp']}_b.exr"))
        parts = decompose({k: (a[k] + b[k]) / 2 for k in a}, demodulate_specular=True)
        colour = demod["specular_color"].numpy()
        np.testing.assert_allclose(colour, parts.specular_color.transpose(2, 0, 1), rtol=2e-3, atol=1e-3)
        assert (colour != 1).mean() > 0.1  # the tiny views do have glossy surfaces
        for name in ("specular", "specular_reference"):  # light: times the colour it is the radiance
            np.testing.assert_allclose(colour * demod[name].numpy(), plain[name].numpy(), rtol=4e-3,
                                       atol=1e-3 * meta["scale"])
        for name in ("diffuse", "diffuse_color", "diffuse_reference", "albedo", "normal", "depth"):
            np.testing.assert_array_equal(demod[name].numpy(), plain[name].numpy())
        # the recombined image the losses and validation see is the same with and without demodulation
        for buffers in (("diffuse", "specular"), ("diffuse_reference", "specular_reference")):
            batch = {k: v[None] for k, v in demod.items()}
            np.testing.assert_allclose(recombine_batch(batch, *(batch[n] for n in buffers)).numpy()[0],
                                       recombine_batch(plain, *(plain[n] for n in buffers)).numpy(),
                                       rtol=4e-3, atol=2e-3 * meta["scale"])


@pytest.mark.slow
def test_shards_and_config_must_agree_on_demodulation(demodulated_views):
    from training.config import config_from_dict
    from training.data import ShardDataset, build_datasets

    work, _record = demodulated_views
    plain, demod = work / "packed" / "train-full", work / "packed" / "train-full-d"
    with pytest.raises(ValueError, match="packed (with|without) --demodulate-specular, unlike the other"):
        ShardDataset([plain, demod], patch_size=None)
    config = config_from_dict({"data": {"kind": "shards", "train": [str(demod)], "patch_size": 32}})
    with pytest.raises(ValueError, match="with --demodulate-specular.*data.demodulate_specular is false"):
        build_datasets(config)
    config.data.demodulate_specular = True
    assert build_datasets(config)[0].demodulate_specular
    with pytest.raises(ValueError, match="data.demodulate_specular needs data.kind shards"):
        config_from_dict({"data": {"kind": "synthetic", "demodulate_specular": True}})


@pytest.mark.slow
def test_tiny_demodulating_model_trains_exports_and_runs_in_the_core_as_in_torch(demodulated_views, tmp_path):
    import torch

    from tests.training_helpers import tiny_config
    from training.checkpoint import load_weights
    from training.datagen.exr_io import read_passes
    from training.export import export_run
    from training.graph import build_graph
    from training.train import train

    work, record = demodulated_views
    folder = str(work / "packed" / "train-full-d")
    config = tiny_config("fast", ["data.kind=shards", "data.demodulate_specular=true", "train.steps=4",
                                  "train.val_interval=2", "train.checkpoint_interval=2", "data.batch_size=2",
                                  "data.val_batches=1"])
    config.data.train, config.data.val, config.data.options = [folder], [folder], {}
    train(config, tmp_path / "run", progress=False)
    path = export_run(tmp_path / "run", tmp_path / "models" / "demod.onnx")
    info = read_model_info(path)
    assert info.demodulate_specular and info.metadata["kprcan.format_version"] == "3"
    assert "demodulates specular" in info.summary()

    view = work / record["dir"]
    a, b = read_passes(str(view / "spp8_a.exr")), read_passes(str(view / "spp8_b.exr"))
    passes = {k: (a[k] + b[k]) / 2 for k in a}
    result = load_model(str(path), device="cpu").denoise(passes)
    parts = decompose(passes, demodulate_specular=True)
    graph = build_graph(config).eval()
    load_weights(path.with_suffix(".safetensors"), graph)
    inputs = {name: torch.from_numpy(np.ascontiguousarray(getattr(parts, name).transpose(2, 0, 1)))[None]
              for name in ("diffuse", "specular", "albedo", "normal", "depth")}
    with torch.no_grad():
        diffuse, specular = (t[0].numpy().transpose(1, 2, 0) for t in graph(**inputs))
    np.testing.assert_allclose(result.outputs["diffuse_denoised"], diffuse, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(result.outputs["specular_denoised"], specular, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(result.specular, parts.specular_color * specular, atol=1e-4, rtol=1e-4)
    recombined = parts.diffuse_color * diffuse + parts.specular_color * specular + parts.residual
    np.testing.assert_allclose(result.beauty[..., :3], recombined, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_pack_command_line_writes_demodulated_folders(demodulated_views, datagen_cli):
    work, _record = demodulated_views
    datagen_cli("pack", "--out", str(work), "--split", "train", "--full", "--max-firefly-fraction", "1",
                "--demodulate-specular", "--denoise-residual")
    index = json.loads((work / "packed" / "train-full-d-r" / "index.json").read_text())
    assert index.get("demodulate_specular") is True and index.get("denoise_residual") is True
