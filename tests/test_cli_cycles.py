"""``kprcan`` on real Cycles renders: bpy 4.5 (``cycles_exr``) and bpy 5.0 (``cycles_exr_bpy5``, with
5.0 pass names; skipped when the side environment .venv-bpy5 is missing — ``make test`` creates it)."""

from __future__ import annotations

import numpy as np
import pytest
from cli_helpers import kprcan
from exr_fixtures import read_channels
from onnx_models import save_model

pytestmark = pytest.mark.slow  # the fixture renders with bpy on first use (then cached)


@pytest.mark.parametrize("render", ["cycles_exr", "cycles_exr_bpy5"])
def test_real_render_is_ready_and_identity_denoise_gives_back_combined(render, request, tmp_path):
    cycles_exr = request.getfixturevalue(render)
    models = tmp_path / "models"
    identity = save_model(models, "identity", name="test-identity")
    info = kprcan("info", cycles_exr, "--model", identity, home=tmp_path, model_path=models)
    assert info.code == 0 and "view layer 'ViewLayer': ready" in info.stdout, info.stdout + info.stderr

    out = tmp_path / "identity.exr"
    result = kprcan("denoise", cycles_exr, "-o", out, "--model", identity, "--tile", "16", "-q",
                    home=tmp_path, model_path=models)
    assert result.code == 0, result.stderr
    before, after = read_channels(cycles_exr), read_channels(out)
    assert set(before) <= set(after)
    spelled = "Diffuse Direct" if render.endswith("bpy5") else "DiffDir"
    assert f"ViewLayer.{spelled}.R" in before
    # Cycles' own light-path split recombines to Combined: the decomposition loses nothing on real data
    for channel in "RGBA":
        noisy = before[f"ViewLayer.Combined.{channel}"]
        np.testing.assert_allclose(after[f"ViewLayer.Combined.{channel}"], noisy, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(after[f"ViewLayer.Noisy Image.{channel}"], noisy)


def test_real_render_with_a_filtering_model(cycles_exr, tmp_path):
    models = tmp_path / "models"
    pooled = save_model(models, "pooled", name="test-pooled")
    out = tmp_path / "den.exr"
    result = kprcan("denoise", cycles_exr, "-o", out, "--model", pooled, "--tile", "16",
                    home=tmp_path, model_path=models)
    assert result.code == 0, result.stderr
    after = read_channels(out)
    combined = np.stack([after[f"ViewLayer.Combined.{c}"] for c in "RGB"], axis=-1)
    noisy = np.stack([after[f"ViewLayer.Noisy Image.{c}"] for c in "RGB"], axis=-1)
    assert np.isfinite(combined).all() and np.abs(combined - noisy).max() > 1e-3
    for name in ("Denoised Diffuse", "Denoised Specular"):
        assert all(f"ViewLayer.{name}.{c}" in after for c in "RGB")
