"""Real Cycles renders (pip bpy) of the test scene: channel layout, decomposition, noise vs reference."""

from __future__ import annotations

import numpy as np
import pytest

from denoiser_core.passes import PASS_TABLE, decompose
from tests.conftest import RENDER_CACHE
from training.datagen.exr_io import exr_channel_names, exr_part_count, read_passes
from training.datagen.launch import render_cached
from training.datagen.quality import find_fireflies
from training.datagen.scene_kinds import make_scene

# Passes Cycles writes with denoising_store_passes but the denoiser off: everything except Noisy Image,
# and except the Vector pass, which datagen does not enable (its views do not move).
WRITTEN = [name for name in PASS_TABLE if name not in ("noisy_image", "vector")]
COMPONENTS = {1: "Z", 3: "RGB", 4: "RGBA"}
XYZ_PASSES = {"normal", "denoising_normal"}


def expected_channels(major: int) -> list[str]:
    names = []
    for canonical in WRITTEN:
        v4, v5, count, _setting = PASS_TABLE[canonical]
        components = "XYZ" if canonical in XYZ_PASSES else COMPONENTS[count]
        names += [f"ViewLayer.{v5 if major >= 5 else v4}.{c}" for c in components]
    return sorted(names)


def test_render_writes_every_denoiser_pass(cycles_exr):
    assert exr_channel_names(str(cycles_exr)) == expected_channels(4)


@pytest.mark.parametrize("fixture", ["cycles_exr", "cycles_reference_exr"])
def test_combined_is_sum_of_decomposed_parts(fixture, request):
    passes = read_passes(str(request.getfixturevalue(fixture)))
    parts = decompose(passes)
    # the decomposition leaves exactly emission + environment in the residual
    unexplained = parts.residual - passes["emission"] - passes["environment"]
    scale = max(1.0, float(np.abs(passes["combined"][..., :3]).max()))
    assert np.abs(unexplained).max() <= 1e-4 * scale
    # and the scene really exercises every component
    for name in ("diffuse", "specular", "albedo"):
        assert getattr(parts, name).std() > 0.01, name
    assert passes["transmission_indirect"].max() > 0.1
    assert passes["volume_direct"].max() > 0.01
    assert passes["emission"].max() > 1.0


def test_reference_is_much_less_noisy(cycles_exr, cycles_reference_exr):
    noisy = decompose(read_passes(str(cycles_exr)))
    reference = decompose(read_passes(str(cycles_reference_exr)))
    # features are nearly noise-free already, radiance is not: 16 spp must be far from 512 spp
    assert np.abs(noisy.albedo - reference.albedo).mean() < 0.05
    radiance_error = np.abs(noisy.diffuse - reference.diffuse).mean()
    assert radiance_error > 1e-3


@pytest.mark.bpy5
def test_bpy5_render_writes_every_pass_with_5_0_names(cycles_exr_bpy5):
    assert exr_part_count(str(cycles_exr_bpy5)) == 1  # blender_compat asks 5.0 for the 4.x layout
    assert exr_channel_names(str(cycles_exr_bpy5)) == expected_channels(5)
    passes = read_passes(str(cycles_exr_bpy5))
    assert set(passes) == set(WRITTEN)
    unexplained = decompose(passes).residual - passes["emission"] - passes["environment"]
    assert np.abs(unexplained).max() <= 1e-4 * max(1.0, float(passes["combined"].max()))


@pytest.mark.bpy5
def test_bpy5_default_multipart_exr_is_read_completely(small_scene_spec, bpy5_python, tmp_path):
    """Blender 5.0's default layout: one EXR part per pass (only Combined is in part 0)."""
    path = render_cached(small_scene_spec, samples=4, seed=2, cache_dir=tmp_path, name="multipart",
                         python=bpy5_python, job_options={"exr_single_part": False})
    assert exr_part_count(str(path)) == len(WRITTEN)
    assert exr_channel_names(str(path)) == expected_channels(5)
    assert set(read_passes(str(path))) == set(WRITTEN)


def test_firefly_detection_flags_isolated_spikes_only(cycles_reference_exr):
    rgb = read_passes(str(cycles_reference_exr))["combined"][..., :3].copy()
    before = find_fireflies(rgb)
    rgb[10, 20] = 500.0                 # one rare high-energy path: a single pixel
    rgb[30:33, 40:43] = 500.0           # a small bright object: several pixels
    after = find_fireflies(rgb)
    assert after[10, 20] and not before[10, 20]
    assert not after[30:33, 40:43].any()
    assert (after & ~before).sum() == 1


@pytest.mark.parametrize("kind", ["glass", "glossy", "motion"])
def test_stress_kinds_render_what_they_stress(kind):
    """The glass, glossy and motion stress kinds through a real Cycles render (32x32, 8 spp): glass shows
    transmitted light, the night street is mostly glossy light (reflected neon), and the moving props
    blur: the motion view differs from the same scene with its shutter closed."""
    scene = make_scene(3, (32, 32), kind=kind)
    passes = read_passes(str(render_cached(scene, samples=8, seed=1, cache_dir=RENDER_CACHE, name=kind)))
    assert all(np.isfinite(image).all() for image in passes.values())

    def mean(*names):
        return float(sum(passes[name][..., :3].mean() for name in names))

    if kind == "glass":
        transmitted = passes["transmission_direct"] + passes["transmission_indirect"]
        assert (transmitted[..., :3].max(-1) > 0.01).mean() > 0.02
    elif kind == "glossy":
        assert mean("emission") > 0 and mean("glossy_direct", "glossy_indirect") > mean(
            "diffuse_direct", "diffuse_indirect")
    else:
        still = read_passes(str(render_cached({**scene, "motion_blur": None}, samples=8, seed=1,
                                              cache_dir=RENDER_CACHE, name="motion-still")))
        assert np.abs(still["combined"] - passes["combined"]).mean() > 0.01
