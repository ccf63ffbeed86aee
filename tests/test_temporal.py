"""Temporal mode on real rendered shots (pip bpy, Vector pass) with the shipped ``fast`` model.

Bars: on a static shot the flicker (temporal standard deviation of the clamped sRGB frames) is at most
half of OIDN's per-frame flicker and no frame loses more than 0.1 dB against the per-frame result; on a
pan and a moving object no frame loses more than 0.2 dB and the region the object uncovers is no worse
than per frame (no trail); with no history (first frame, after a cut) the output is the per-frame result.
"""

from __future__ import annotations

import numpy as np
import pytest

from denoiser_core.exr import read_exr
from denoiser_core.images import psnr, to_srgb
from denoiser_core.inference import load_model
from denoiser_core.temporal import (
    FILTERED,
    FrameGuides,
    History,
    TemporalSettings,
    filter_result,
    frame_guides,
)
from training.datagen.sequences import render_shot

pytestmark = pytest.mark.slow  # renders four small shots with bpy on first use (then cached)


@pytest.fixture(scope="module")
def fast():
    return load_model("fast", "cpu")


def _passes(path):
    image = read_exr(path)
    return image.canonical_passes(image.layers[0])


@pytest.fixture(scope="module")
def shots(request, fast):
    """shot -> per-frame and temporal beauties, passes, references and the history share per frame."""
    cache = request.config.rootpath / ".cache" / "test_renders" / "sequences"
    runs = {}
    for shot in ("static", "pan", "moving", "cut"):
        paths = render_shot(shot, cache)
        references = [_passes(p)["combined"][..., :3] for p in paths["reference"]]
        run = {"per_frame": [], "temporal": [], "passes": [], "used": [], "cut": [],
               "references": references * (len(paths["noisy"]) if len(references) == 1 else 1)}
        history = None
        for path in paths["noisy"]:
            passes = _passes(path)
            result = fast.denoise(passes)
            filtered, step = filter_result(result, frame_guides(passes), history)
            history = step.history
            run["per_frame"].append(result.beauty)
            run["temporal"].append(filtered.beauty)
            run["passes"].append(passes)
            run["used"].append(step.history_fraction)
            run["cut"].append(step.cut)
        runs[shot] = run
    return runs


def _psnrs(frames, references):
    return np.array([psnr(to_srgb(f[..., :3]), to_srgb(r)) for f, r in zip(frames, references, strict=True)])


def _flicker(frames):
    return float(np.std(np.stack([to_srgb(f[..., :3]) for f in frames]), axis=0).mean())


def test_first_frame_is_the_per_frame_result(shots):
    for run in shots.values():
        np.testing.assert_array_equal(run["temporal"][0], run["per_frame"][0])
        assert run["used"][0] == 0.0


def test_static_shot_flickers_less_than_half_of_oidn(shots):
    from training.evaluate import oidn_denoise

    run = shots["static"]
    oidn = [oidn_denoise(passes) for passes in run["passes"]]
    temporal, per_frame = _flicker(run["temporal"]), _flicker(run["per_frame"])
    assert temporal <= 0.5 * _flicker(oidn), (temporal, _flicker(oidn), per_frame)
    gain = _psnrs(run["temporal"], run["references"]) - _psnrs(run["per_frame"], run["references"])
    assert gain.min() >= -0.1, gain
    assert min(run["used"][1:]) > 0.9  # a static shot keeps history nearly everywhere


@pytest.mark.parametrize("shot", ["pan", "moving"])
def test_motion_costs_no_quality(shots, shot):
    run = shots[shot]
    gain = _psnrs(run["temporal"], run["references"]) - _psnrs(run["per_frame"], run["references"])
    assert gain.min() >= -0.2, gain


def test_moving_object_leaves_no_trail(shots):
    """Where the sphere stood a frame earlier the wall shows again; history from there is rejected, so the
    error there is the per-frame result's, not a smear of the sphere."""
    run = shots["moving"]
    checked = 0
    for t in range(1, len(run["passes"])):
        before = run["passes"][t - 1]["denoising_depth"][..., 0]
        now = run["passes"][t]["denoising_depth"][..., 0]
        uncovered = now > 1.1 * before  # the static camera sees farther where the sphere left
        if not uncovered.any():
            continue
        checked += 1
        reference = to_srgb(run["references"][t])
        errors = [np.mean((to_srgb(x[t][..., :3]) - reference)[uncovered] ** 2)
                  for x in (run["temporal"], run["per_frame"])]
        assert errors[0] <= 1.05 * errors[1], (t, errors)
    assert checked >= 3


def test_frame_after_a_cut_is_the_per_frame_result(shots):
    run = shots["cut"]
    after_cut = len(run["passes"]) // 2  # render_shot's cut: a new camera from the middle frame on
    assert run["cut"][after_cut] and run["used"][after_cut] == 0.0
    np.testing.assert_array_equal(run["temporal"][after_cut], run["per_frame"][after_cut])
    assert run["used"][after_cut + 1] > 0.9  # and the new shot builds its own history at once


def test_history_round_trips_through_its_packed_pass():
    rng = np.random.default_rng(0)
    guides = FrameGuides(rng.random((4, 5, 1), np.float32), rng.random((4, 5, 3), np.float32),
                         np.zeros((4, 5, 2), np.float32))
    history = History({name: rng.random((4, 5, 3), np.float32) for name in FILTERED},
                      rng.integers(1, 10, (4, 5, 1)).astype(np.float32), guides)
    again = History.unpacked(history.packed(), guides)
    for name in FILTERED:
        np.testing.assert_array_equal(again.parts[name], history.parts[name])
    np.testing.assert_array_equal(again.frames, history.frames)


def test_disocclusion_is_rejected_per_pixel():
    """A pixel whose previous depth differs (something moved away) takes no history; the rest blend."""
    from denoiser_core.temporal import temporal_filter

    shape = (8, 8)
    normal = np.zeros(shape + (3,), np.float32)
    normal[..., 2] = 1.0
    depth = np.full(shape + (1,), 5.0, np.float32)
    before = depth.copy()
    before[2:4, 2:4] = 2.0  # an object stood here in the previous frame
    still = np.zeros(shape + (2,), np.float32)
    past = History({name: np.full(shape + (3,), 0.5, np.float32) for name in FILTERED},
                   np.full(shape + (1,), 4.0, np.float32), FrameGuides(before, normal, still))
    current = {name: np.full(shape + (3,), 0.52, np.float32) for name in FILTERED}
    step = temporal_filter(current, FrameGuides(depth, normal, still), past, TemporalSettings())
    diffuse = step.parts["diffuse"][..., 0]
    assert np.all(diffuse[2:4, 2:4] == np.float32(0.52))           # rejected: the current frame as is
    assert np.all(np.abs(diffuse[6:, 6:] - (0.2 * 0.52 + 0.8 * 0.5)) < 1e-6)  # 4 frames of history
    assert step.history.frames[2, 2, 0] == 1.0 and step.history.frames[7, 7, 0] == 5.0


def test_reprojection_follows_the_vector_pass_in_x_and_y():
    """Vector.xy is the offset to the previous position, x right and y up: vector (+1, -1) means the
    surface was one column right and one row down (rows grow downwards), and the history is read there.
    Clamp and shading test are opened wide so only the reprojection acts."""
    from denoiser_core.temporal import temporal_filter

    shape = (6, 7)
    normal = np.zeros(shape + (3,), np.float32)
    normal[..., 2] = 1.0
    depth = np.full(shape + (1,), 3.0, np.float32)
    marks = np.arange(42, dtype=np.float32).reshape(shape)[..., None].repeat(3, axis=-1)
    past = History({name: marks for name in FILTERED}, np.ones(shape + (1,), np.float32),
                   FrameGuides(depth, normal, np.zeros(shape + (2,), np.float32)))
    vector = np.zeros(shape + (2,), np.float32)
    vector[..., 0], vector[..., 1] = 1.0, -1.0  # previous position: one column right, one row down
    wide = TemporalSettings(clamp_relative=1e6, change_low=1e6, change_high=2e6, color_motion=1e6)
    current = {name: np.full(shape + (3,), 100.0, np.float32) for name in FILTERED}
    step = temporal_filter(current, FrameGuides(depth, normal, vector), past, wide)
    diffuse = step.parts["diffuse"][..., 0]
    for row, col in ((1, 1), (2, 4), (4, 5)):
        assert diffuse[row, col] == pytest.approx(0.5 * 100.0 + 0.5 * marks[row + 1, col + 1, 0])


def test_a_shading_change_resets_the_frame_count():
    """Where the shading test gives the current frame all the weight, the history holds one frame again,
    so the next steady frame averages two frames, not ten."""
    from denoiser_core.temporal import temporal_filter

    shape = (8, 8)
    normal = np.zeros(shape + (3,), np.float32)
    normal[..., 2] = 1.0
    depth = np.full(shape + (1,), 3.0, np.float32)
    still = np.zeros(shape + (2,), np.float32)
    guides = FrameGuides(depth, normal, still)
    past = History({name: np.full(shape + (3,), 0.2, np.float32) for name in FILTERED},
                   np.full(shape + (1,), 9.0, np.float32), guides)
    current = {name: np.full(shape + (3,), 1.0, np.float32) for name in FILTERED}  # a light came on
    step = temporal_filter(current, guides, past, TemporalSettings())
    assert np.all(step.parts["diffuse"] == 1.0)
    assert np.all(step.history.frames == 1.0)
