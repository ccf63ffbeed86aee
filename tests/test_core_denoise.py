"""Denoising passes and files end to end: decomposition, recombination, sanitising, output layout."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import numpy as np
import OpenEXR
import pytest
from exr_fixtures import read_channels, synthetic_passes, write_blender_exr
from onnx_models import save_model

from denoiser_core import DenoiserError, denoise_file, load_model, read_exr
from denoiser_core.passes import (
    FAR_DEPTH,
    FOLD_MIN_COLOR,
    PASS_TABLE,
    all_finite,
    decompose,
    enable_hint,
    recombine,
    recombine_radiance,
    sanitize_guide,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "noisy.exr"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {kind: load_model(str(save_model(folder, kind)), device="cpu")
            for kind in ("identity", "guided", "pooled", "variance", "nonfinite")}


def test_recombine_of_decompose_gives_back_combined():
    passes = synthetic_passes(24, 32, seed=5)
    parts = decompose(passes)
    np.testing.assert_allclose(recombine(parts, parts.diffuse, parts.specular), passes["combined"],
                               rtol=1e-5, atol=1e-5)
    assert np.abs(parts.residual).max() > 0.5  # emission and environment ride along in the residual


def test_decompose_computes_its_documented_formulas_to_the_bit_and_leaves_the_render_alone():
    """decompose works in place on arrays of its own for speed; on a real Cycles render it must give
    exactly what the module docstring's formulas give written plainly, change no pass, and hand out
    no writable view of the caller's pixels."""
    image = read_exr(EXAMPLE)
    passes = image.canonical_passes(next(layer for layer in image.layers if image.canonical_passes(layer)))
    before = {name: array.copy() for name, array in passes.items()}
    p = {name: array.astype(np.float32) for name, array in before.items()}
    diffuse = p["diffuse_direct"] + p["diffuse_indirect"]
    specular = (p["glossy_color"] * (p["glossy_direct"] + p["glossy_indirect"])
                + p["transmission_color"] * (p["transmission_direct"] + p["transmission_indirect"])
                + p["volume_direct"] + p["volume_indirect"])
    residual = p["combined"][..., :3] - (p["diffuse_color"] * diffuse + specular)
    colour = p["diffuse_color"]
    radiance = colour * diffuse + residual - (p["emission"][..., :3] + p["environment"][..., :3])
    folded = np.maximum(np.where(colour > FOLD_MIN_COLOR, radiance / np.maximum(colour, FOLD_MIN_COLOR),
                                 diffuse), 0.0)
    residual = residual + colour * (diffuse - folded)
    # finite: the caller (inference) has checked the passes and decompose checks none again
    for denoise_residual, finite in ((False, False), (True, False), (False, True), (True, True)):
        parts = decompose(passes, denoise_residual=denoise_residual, finite=finite)
        np.testing.assert_array_equal(parts.diffuse, folded)
        np.testing.assert_array_equal(parts.specular, specular + residual if denoise_residual else specular)
        np.testing.assert_array_equal(parts.residual, 0 * residual if denoise_residual else residual)
        np.testing.assert_array_equal(parts.diffuse_color, colour)
        np.testing.assert_array_equal(parts.alpha, p["combined"][..., 3:])
        for name in ("diffuse", "diffuse_color", "specular", "albedo", "normal", "depth", "residual", "alpha",
                     "specular_color"):
            array = getattr(parts, name)
            assert array.dtype == np.float32 and array.shape[:2] == diffuse.shape[:2]
            shares = any(np.shares_memory(array, pixels) for pixels in passes.values())
            assert not (shares and array.flags.writeable), name
        beauty, diffuse_radiance, specular_radiance = recombine_radiance(parts, parts.diffuse, parts.specular)
        np.testing.assert_allclose(beauty, p["combined"], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(diffuse_radiance, colour * folded)
        np.testing.assert_array_equal(beauty[..., :3], diffuse_radiance + specular_radiance + parts.residual)
        assert beauty.transpose(2, 0, 1).flags.c_contiguous  # planar, as the EXR's Combined is stored
    for name, array in passes.items():
        np.testing.assert_array_equal(array, before[name], err_msg=name)


def test_non_finite_values_are_found_whatever_their_neighbours():
    huge = np.full((64, 64, 3), 3e38, np.float32)  # finite, though their sum is not in float32
    assert all_finite(huge)
    for bad in (np.inf, -np.inf, np.nan):
        broken = huge.copy()
        broken[17, 5, 2] = bad
        assert not all_finite(broken)
    mixed = np.zeros((4, 4, 3), np.float32)
    mixed[0, 0, 0], mixed[1, 1, 1] = np.inf, -np.inf  # their sum is NaN, still not finite
    assert not all_finite(mixed)


def test_colour_covariance_goes_to_the_diffuse_light_not_the_untouched_residual():
    """Combined holds the mean of per-sample products DiffCol * light; the passes hold the means. Two
    samples per pixel with different colours: the covariance must be denoised with the diffuse light
    (residual = Emit + Env exactly), and without Emit/Env passes the old split stays."""
    passes = synthetic_passes(24, 32, seed=3)
    rng = np.random.default_rng(1)
    color_a, color_b = (rng.uniform(0.05, 0.9, (24, 32, 3)).astype(np.float32) for _ in range(2))
    light_a, light_b = (rng.uniform(0.0, 3.0, (24, 32, 3)).astype(np.float32) for _ in range(2))
    before = passes["diffuse_color"] * (passes["diffuse_direct"] + passes["diffuse_indirect"])
    per_sample = (color_a * light_a + color_b * light_b) / 2
    passes["diffuse_color"] = (color_a + color_b) / 2
    passes["diffuse_direct"], passes["diffuse_indirect"] = (light_a + light_b) / 2, np.zeros_like(light_a)
    passes["combined"][..., :3] += per_sample - before
    parts = decompose(passes)
    emitted = passes["emission"] + passes["environment"]
    np.testing.assert_allclose(parts.residual, emitted, atol=1e-5)
    np.testing.assert_allclose(parts.diffuse_color * parts.diffuse, per_sample, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(recombine(parts, parts.diffuse, parts.specular), passes["combined"],
                               rtol=1e-5, atol=1e-5)
    without = decompose({k: v for k, v in passes.items() if k not in ("emission", "environment")})
    np.testing.assert_allclose(without.diffuse, passes["diffuse_direct"])
    assert np.abs(without.residual - emitted).max() > 0.1  # the covariance rides along untouched


def test_denoise_residual_moves_emission_and_environment_into_specular():
    passes = synthetic_passes(24, 32, seed=5)
    light_passes, everything = decompose(passes), decompose(passes, denoise_residual=True)
    assert not everything.residual.any()
    np.testing.assert_allclose(everything.specular, light_passes.specular + light_passes.residual, atol=1e-6)
    np.testing.assert_allclose(recombine(everything, everything.diffuse, everything.specular),
                               passes["combined"], rtol=1e-5, atol=1e-5)


def test_model_trained_with_the_residual_is_fed_it(tmp_path):
    """A model whose metadata says denoise_residual sees emission and environment in its specular input,
    and what it returns for them is what the image gets: nothing is added back noisy."""
    passes = synthetic_passes(24, 32, seed=9)
    plain = load_model(str(save_model(tmp_path, "guided", name="plain")), device="cpu")
    flagged = load_model(str(save_model(tmp_path, "guided", name="flagged", denoise_residual="true",
                                                format_version="2")),
                         device="cpu")
    assert flagged.info.denoise_residual and not plain.info.denoise_residual
    a, b = plain.denoise(passes), flagged.denoise(passes)
    residual = decompose(passes).residual
    np.testing.assert_allclose(a.beauty[..., :3] - a.outputs["specular_denoised"] - a.diffuse, residual,
                               rtol=1e-4, atol=1e-4)  # passed through noisy
    np.testing.assert_allclose(b.beauty[..., :3], b.diffuse + b.outputs["specular_denoised"],
                               rtol=1e-4, atol=1e-4)  # nothing outside the network's outputs
    assert np.abs(b.outputs["specular_denoised"] - a.outputs["specular_denoised"]).max() > 0.1


def test_identity_model_returns_the_noisy_render(models):
    passes = synthetic_passes(24, 32, seed=6)
    result = models["identity"].denoise(passes, tile=8)
    np.testing.assert_allclose(result.beauty, passes["combined"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.diffuse, passes["diffuse_color"]  # folding: / and * DiffCol
                               * (passes["diffuse_direct"] + passes["diffuse_indirect"]), rtol=1e-5)
    assert result.beauty.shape == (24, 32, 4) and result.specular.shape == (24, 32, 3)
    assert set(result.outputs) == {"diffuse_denoised", "specular_denoised"}
    # The network sees the specular buffer training packed (decompose of every pass): volume included.
    np.testing.assert_allclose(result.outputs["specular_denoised"], decompose(passes).specular, rtol=1e-6)
    assert np.abs(passes["volume_direct"]).max() > 0.01


def test_filter_model_reduces_noise(models):
    clean = synthetic_passes(48, 64, seed=7, noise=0.0)["combined"]
    noisy = synthetic_passes(48, 64, seed=7, noise=0.5)
    result = models["guided"].denoise(noisy)
    error_before = np.mean((noisy["combined"] - clean) ** 2)
    assert np.mean((result.beauty - clean) ** 2) < 0.5 * error_before


def test_noisy_image_is_denoised_when_blender_already_denoised_combined(models):
    passes = synthetic_passes(16, 16, seed=8)
    passes["noisy_image"] = passes["combined"]
    passes["combined"] = np.full_like(passes["combined"], 0.25)  # stands for Blender's OIDN result
    result = models["identity"].denoise(passes)
    np.testing.assert_allclose(result.beauty, passes["noisy_image"], rtol=1e-5, atol=1e-5)


def test_nan_and_inf_inputs_are_sanitised_with_a_warning(models, caplog):
    passes = synthetic_passes(16, 16, seed=9)
    passes["diffuse_direct"][3, 4, 0] = np.nan
    passes["combined"][5, 5, :2] = np.inf
    passes["denoising_normal"][0, 0, 2] = -np.inf
    before = {name: array.copy() for name, array in passes.items()}
    with caplog.at_level(logging.WARNING, logger="kprcan"):
        result = models["guided"].denoise(passes, tile=8, where="shot.exr")
    assert result.nonfinite_inputs == 4
    assert ("shot.exr: 4 NaN/Inf values in passes the denoiser reads, made finite for it (Combined 2, "
            "Diffuse Direct 1, Denoising Normal 1)") in caplog.text
    for array in (result.beauty, result.diffuse, result.specular, *result.outputs.values()):
        assert np.isfinite(array).all()
    for name, array in passes.items():  # the caller's passes are not sanitised in place
        np.testing.assert_array_equal(array, before[name], err_msg=name)


@pytest.mark.parametrize("kind", ["nonfinite", "nan"])
def test_a_model_that_outputs_nan_or_inf_is_an_error_naming_it(models, tmp_path, kind):
    denoiser = models.get(kind) or load_model(str(save_model(tmp_path, kind)), device="cpu")
    with pytest.raises(DenoiserError, match=rf"model '{kind}' \(.*{kind}\.onnx\) is broken: it output \d+ "
                                            r"NaN/Inf values in diffuse_denoised") as raised:
        denoiser.denoise(synthetic_passes(16, 16))
    assert raised.value.exit_code == 1


def test_guides_are_clamped_to_their_valid_range_in_copies():
    passes = synthetic_passes(8, 8, seed=2)
    passes["denoising_normal"][1, 1] = [1e6, -np.inf, np.nan]
    passes["denoising_depth"][2, 2, 0], passes["denoising_depth"][3, 3, 0] = np.inf, -4.0
    passes["denoising_albedo"][4, 4] = [-0.5, 7.0, np.nan]
    raw = passes["denoising_normal"].copy()
    parts = decompose(passes)
    assert parts.normal[1, 1].tolist() == [1.0, -1.0, 0.0]
    assert parts.depth[2, 2, 0] == FAR_DEPTH and parts.depth[3, 3, 0] == 0.0
    assert parts.albedo[4, 4].tolist() == [0.0, 7.0, 0.0]  # no upper bound: lights hold their radiance
    np.testing.assert_array_equal(passes["denoising_normal"], raw)
    valid = synthetic_passes(8, 8, seed=2)  # a valid render's guides are fed as they are
    for name, feature in (("albedo", "denoising_albedo"), ("normal", "denoising_normal"),
                          ("depth", "denoising_depth")):
        np.testing.assert_array_equal(getattr(decompose(valid), name), valid[feature])
    np.testing.assert_array_equal(sanitize_guide("diffuse_variance", np.array([-1.0, np.inf, 2.0])),
                                  [0.0, 0.0, 2.0])


def test_a_few_broken_normals_do_not_reach_far_pixels_through_the_shipped_model():
    """Three Denoising Normal pixels of 1e6 (a broken shader) changed every pixel of the frame, by up to
    ~4, through `fast`'s 140-pixel context; clamped to [-1, 1] they change nothing 16 px away."""
    denoiser = load_model("fast", device="cpu")
    passes = synthetic_passes(96, 128, seed=3)
    clean = denoiser.denoise(passes).beauty
    broken = {name: array.copy() for name, array in passes.items()}
    spots = [(40, 60), (41, 62), (44, 65)]
    for y, x in spots:
        broken["denoising_normal"][y, x] = 1e6
    change = np.abs(denoiser.denoise(broken).beauty - clean).max(axis=-1)
    rows, cols = np.mgrid[0:96, 0:128]
    distance = np.min([np.hypot(rows - y, cols - x) for y, x in spots], axis=0)
    assert change[distance > 16].max() < 0.01, change[distance > 16].max()


def test_missing_passes_and_mismatched_sizes_are_reported(models):
    passes = synthetic_passes(16, 16)
    del passes["glossy_direct"], passes["denoising_albedo"]
    with pytest.raises(DenoiserError, match="Glossy Direct.*use_pass_glossy_direct.*Denoising Albedo.*"
                                            "denoising_store_passes"):
        models["guided"].denoise(passes)
    passes = synthetic_passes(16, 16)
    passes["diffuse_color"] = passes["diffuse_color"][:8]
    with pytest.raises(DenoiserError, match="different sizes"):
        models["guided"].denoise(passes)


def test_missing_pass_hints_name_the_blender_checkbox_and_the_python_setting():
    assert enable_hint("volume_indirect") == ("View Layer Properties > Passes > Light > Volume > Indirect, "
                                              "or view_layer.cycles.use_pass_volume_indirect = True")
    assert enable_hint("depth") == ("View Layer Properties > Passes > Data > Z, "
                                    "or view_layer.use_pass_z = True")
    for name, (_v4, _v5, _channels, setting) in PASS_TABLE.items():
        hint = enable_hint(name)
        assert hint.startswith(("View Layer Properties > Passes > Light > ",
                                "View Layer Properties > Passes > Data > ")), hint
        assert hint.endswith(f", or view_layer.{setting} = True")


def test_variance_model_needs_variance_inputs(models):
    passes = synthetic_passes(16, 16)
    with pytest.raises(DenoiserError, match="needs diffuse_variance"):
        models["variance"].denoise(passes)
    passes["diffuse_variance"] = passes["specular_variance"] = np.ones((16, 16, 1), np.float32)
    assert np.isfinite(models["variance"].denoise(passes).beauty).all()


def test_denoise_file_keeps_every_channel_and_adds_the_denoised_passes(tmp_path, models):
    passes = synthetic_passes(20, 28, seed=10)
    partial = {k: v for k, v in passes.items() if not k.startswith("glossy")}  # a layer we cannot denoise
    source = write_blender_exr(tmp_path / "in.exr", passes, layers=("ViewLayer", "Fog.001"),
                               extra={"ViewLayer.CryptoObject00.r": np.ones((20, 28), np.float32)})
    # the second layer lacks the glossy passes: rewrite it without them
    channels = {k: v for k, v in read_channels(source).items() if not k.startswith("Fog.001.Gloss")}
    OpenEXR.File({"compression": OpenEXR.PIZ_COMPRESSION, "Camera": "Cam"}, channels).write(str(source))
    out = denoise_file(source, tmp_path / "out" / "den.exr", model=models["guided"], tile=8)
    before, after = read_channels(source), read_channels(out)
    added = {f"ViewLayer.{p}.{c}" for p, cs in (("Noisy Image", "RGBA"), ("Denoised Diffuse", "RGB"),
                                                 ("Denoised Specular", "RGB")) for c in cs}
    assert set(after) == set(before) | added
    np.testing.assert_array_equal(after["ViewLayer.Noisy Image.R"], before["ViewLayer.Combined.R"])
    assert np.abs(after["ViewLayer.Combined.R"] - before["ViewLayer.Combined.R"]).max() > 1e-2
    expected = models["guided"].denoise(passes, tile=8)
    np.testing.assert_allclose(after["ViewLayer.Combined.G"], expected.beauty[..., 1], rtol=1e-6)
    np.testing.assert_allclose(after["ViewLayer.Denoised Specular.B"], expected.specular[..., 2], rtol=1e-6)
    for name in before:  # everything else, the undenoisable layer included, is untouched
        if not name.startswith("ViewLayer.Combined"):
            np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    header = OpenEXR.File(str(out), header_only=True).header()
    assert header["Camera"] == "Cam" and header["compression"] == OpenEXR.PIZ_COMPRESSION
    assert header["kprcan.model"] == "guided"
    assert partial and not list(out.parent.glob("*.tmp"))


def test_existing_noisy_image_pass_is_kept_and_used(tmp_path, models):
    passes = synthetic_passes(16, 16, seed=11)
    passes["noisy_image"] = passes["combined"].copy()
    passes["combined"] = np.full_like(passes["combined"], 0.5)
    source = write_blender_exr(tmp_path / "in.exr", passes, blender_major=5, half=True)
    after = read_channels(denoise_file(source, tmp_path / "out.exr", model=models["identity"]))
    noisy = read_channels(source)["ViewLayer.Noisy Image.R"].astype(np.float32)
    np.testing.assert_array_equal(after["ViewLayer.Noisy Image.R"], noisy)
    np.testing.assert_allclose(after["ViewLayer.Combined.R"], noisy, rtol=1e-3, atol=1e-3)
    assert "ViewLayer.Diffuse Direct.R" in after and after["ViewLayer.Combined.R"].dtype == np.float32


def test_denoise_file_refuses_to_clobber(tmp_path, models):
    source = write_blender_exr(tmp_path / "in.exr", synthetic_passes(8, 8))
    with pytest.raises(DenoiserError, match="output is the input"):
        denoise_file(source, tmp_path / "." / "in.exr", model=models["identity"], overwrite=True)
    (tmp_path / "taken.exr").write_bytes(b"keep me")
    with pytest.raises(DenoiserError, match="exists"):
        denoise_file(source, tmp_path / "taken.exr", model=models["identity"])
    assert (tmp_path / "taken.exr").read_bytes() == b"keep me"
    denoise_file(source, tmp_path / "taken.exr", model=models["identity"], overwrite=True)
    assert read_exr(tmp_path / "taken.exr").find("ViewLayer", "Noisy Image") is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.exr", "taken.exr"]


def test_output_gets_normal_file_permissions_and_noisy_only_files_work(tmp_path, models):
    passes = synthetic_passes(8, 8)
    passes["noisy_image"] = passes.pop("combined")  # a file with Blender's noisy pass but no Combined
    source = write_blender_exr(tmp_path / "in.exr", passes)
    out = denoise_file(source, tmp_path / "out.exr", model=models["identity"])
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    after = read_channels(out)
    np.testing.assert_allclose(after["ViewLayer.Combined.R"], after["ViewLayer.Noisy Image.R"], atol=1e-5)
