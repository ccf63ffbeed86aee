"""Specular demodulation (``kprcan.demodulate_specular``, format version 3): the networks see specular
*light* (the radiance divided by GlossCol + TransCol) and ``recombine`` multiplies the colour back.

Checked on real Cycles renders (bpy 4.5 and 5.0): the recombination gives back Combined with and without
demodulation and ``denoise_residual``; the shipped models (format versions 1 and 2) still load and run
bit-identically to the recombination they were built for; a demodulating model is fed light and its
Denoised Specular stays radiance.
"""

from __future__ import annotations

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


@pytest.mark.slow
@pytest.mark.parametrize("render", RENDERS)
@pytest.mark.parametrize("preset", ["fast", "quality"])
def test_shipped_models_still_load_and_run_as_before(render, preset, request):
    """The shipped models predate demodulation: they load unchanged and their image is exactly the old
    recombination ``DiffCol * diffuse + specular + residual`` of their raw outputs."""
    info = read_model_info(REPO_MODELS / f"{preset}.onnx")
    assert int(info.metadata["kprcan.format_version"]) in (1, 2)
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
            ("newer", {"format_version": "4"}, "format version 4.*update kprcan")]:
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
