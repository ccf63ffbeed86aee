"""Tiled inference equals whole-image inference (real ONNX models run by onnxruntime)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from exr_fixtures import synthetic_passes
from onnx_models import save_model

from denoiser_core import DenoiserError, load_model, tiling
from denoiser_core.passes import decompose
from denoiser_core.tiling import (
    BASE_BYTES,
    MAX_WINDOW_PIXELS,
    MAX_WORK_FACTOR,
    MEMORY_BUDGET,
    WINDOW_BYTES_PER_PIXEL,
    automatic_tile,
    axis_spans,
    choose_tile,
    reflect_indices,
    window_budget,
    window_size,
)

WHOLE = 1 << 20  # a tile larger than any test image: one window, the reference run


@pytest.mark.parametrize("length, tile, radius, multiple", [
    (53, 8, 2, 1), (53, 13, 3, 8), (64, 16, 3, 8), (7, 4, 2, 1), (100, 512, 40, 8), (9, 1, 0, 8),
])
def test_spans_cover_the_axis_with_aligned_equal_windows(length, tile, radius, multiple):
    spans = axis_spans(length, tile, radius, multiple)
    covered = np.concatenate([np.arange(s.core_start, s.core_end) for s in spans])
    np.testing.assert_array_equal(covered, np.arange(length))  # every pixel exactly once, in order
    padded = -(-length // multiple) * multiple
    assert len({s.window_end - s.window_start for s in spans}) == 1
    for s in spans:
        assert s.window_start % multiple == 0 and s.window_end % multiple == 0
        assert 0 <= s.window_start <= s.core_start < s.core_end <= s.window_end <= padded
        assert s.core_start - s.window_start >= radius or s.window_start == 0
        assert s.window_end - s.core_end >= radius or s.window_end == padded


@pytest.mark.parametrize("length", [1, 2, 5])
def test_reflect_indices_match_numpy_reflect_padding(length):
    values = np.arange(length)
    expected = np.pad(values, (0, 11), mode="reflect") if length > 1 else np.zeros(length + 11, int)
    np.testing.assert_array_equal(values[reflect_indices(0, length + 11, length)], expected)


@pytest.fixture(scope="module")
def passes():
    return synthetic_passes(53, 71, seed=3)


@pytest.mark.parametrize("kind, tiles", [("guided", (8, 13, 24)), ("pooled", (8, 16, 20))])
def test_tiled_equals_untiled(tmp_path, passes, kind, tiles):
    denoiser = load_model(str(save_model(tmp_path, kind)), device="cpu")
    whole = denoiser.denoise(passes, tile=WHOLE)
    assert np.abs(whole.outputs["diffuse_denoised"] - decompose(passes).diffuse).max() > 1e-2  # it filters
    for tile in tiles:
        tiled = denoiser.denoise(passes, tile=tile)
        for name, array in whole.outputs.items():
            np.testing.assert_allclose(tiled.outputs[name], array, rtol=1e-5, atol=1e-5,
                                       err_msg=f"{name} tile {tile}")
        np.testing.assert_allclose(tiled.beauty, whole.beauty, rtol=1e-5, atol=1e-5)


def test_whole_image_run_is_the_model_on_the_reflection_padded_image(tmp_path, passes):
    path = save_model(tmp_path, "pooled")
    result = load_model(str(path), device="cpu").denoise(passes, tile=WHOLE)
    parts = decompose(passes)
    pad = ((0, 56 - 53), (0, 72 - 71), (0, 0))  # to the size multiple 8
    feeds = {name: np.pad(getattr(parts, name), pad, mode="reflect").transpose(2, 0, 1)[None].copy()
             for name in ("diffuse", "specular", "albedo", "normal", "depth")}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    direct = session.run(["diffuse_denoised"], feeds)[0][0].transpose(1, 2, 0)[:53, :71]
    np.testing.assert_allclose(result.outputs["diffuse_denoised"], direct, rtol=1e-6, atol=1e-6)


def test_understated_receptive_radius_breaks_tiling(tmp_path, passes):
    """The equality above holds because of the overlap: without it, tile seams appear."""
    denoiser = load_model(str(save_model(tmp_path, "guided", receptive_radius="0")), device="cpu")
    whole = denoiser.denoise(passes, tile=WHOLE).outputs["diffuse_denoised"]
    tiled = denoiser.denoise(passes, tile=8).outputs["diffuse_denoised"]
    assert np.abs(tiled - whole).max() > 1e-3


def test_progress_reaches_one_and_cancel_stops(tmp_path, passes):
    denoiser = load_model(str(save_model(tmp_path, "guided")), device="cpu")
    seen: list[float] = []
    denoiser.denoise(passes, tile=16, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 4 * 5
    calls = []

    def cancel_after_three() -> bool:
        calls.append(1)
        return len(calls) > 3

    seen.clear()
    with pytest.raises(DenoiserError, match="^cancelled$"):
        denoiser.denoise(passes, tile=16, progress=seen.append, cancel=cancel_after_three)
    assert len(seen) == 3


def test_no_repeated_work_when_one_window_holds_the_axis():
    assert axis_spans(550, 512, 40, 8) == [axis_spans(550, 10_000, 40, 8)[0]]
    assert len(axis_spans(600, 512, 40, 8)) == 2


def test_cores_are_balanced_so_no_sliver_costs_a_whole_window():
    spans = axis_spans(1080, 512, 140, 16)  # 1080p rows, the fast model's context and size multiple
    assert [s.core_end - s.core_start for s in spans] == [368, 368, 344]  # not 512, 512, 56
    assert all(s.window_end - s.window_start == 368 + 2 * 144 for s in spans)


def _cost(height, width, tile, radius=140, multiple=16):
    """(windows, pixels per window, pixels computed) for the shipped model's context and size multiple."""
    rows, cols = axis_spans(height, tile, radius, multiple), axis_spans(width, tile, radius, multiple)
    window_height, window_width = window_size(rows, cols)
    window = window_height * window_width
    return len(rows) * len(cols), window, len(rows) * len(cols) * window


def test_automatic_tile_runs_1080p_as_one_window_and_larger_frames_in_fewer_pixels():
    assert _cost(1080, 1920, choose_tile(1080, 1920, 140, 16))[0] == 1
    assert _cost(96, 128, choose_tile(96, 128, 140, 16))[0] == 1
    for height, width in [(2160, 3840), (1440, 2560), (4320, 7680), (3000, 500)]:
        windows, window, computed = _cost(height, width, choose_tile(height, width, 140, 16))
        assert window <= MAX_WINDOW_PIXELS
        # no fixed tile edge computes fewer pixels within the same window budget
        fixed = [_cost(height, width, t) for t in range(16, 8192, 16)]
        assert computed == min(c for _, w, c in fixed if w <= MAX_WINDOW_PIXELS), (height, width)


@pytest.mark.parametrize("radius, budget", [(140, 1000), (400, MAX_WINDOW_PIXELS), (700, MAX_WINDOW_PIXELS)])
def test_automatic_tile_never_multiplies_the_work(radius, budget):
    """Where the window budget cannot be met without tiny cores (a wide context, or a tiny budget), memory
    gives way: at most MAX_WORK_FACTOR times the image's pixels, in the smallest window that allows."""
    windows, window, computed = _cost(2160, 3840, choose_tile(2160, 3840, radius, 16, budget), radius)
    assert computed <= MAX_WORK_FACTOR * 2160 * 3840 and windows > 1
    assert window == min(w for _, w, c in (_cost(2160, 3840, t, radius) for t in range(16, 3856, 16))
                         if c <= MAX_WORK_FACTOR * 2160 * 3840)


def test_automatic_tile_equals_untiled(tmp_path, passes, monkeypatch):
    monkeypatch.setattr(tiling, "MAX_WINDOW_PIXELS", 40 * 40)  # several windows on the 53 x 71 test image
    denoiser = load_model(str(save_model(tmp_path, "pooled")), device="cpu")
    info = denoiser.info
    assert _cost(53, 71, choose_tile(53, 71, info.receptive_radius, info.size_multiple),
                 info.receptive_radius, info.size_multiple)[0] > 1
    whole = denoiser.denoise(passes, tile=WHOLE).beauty
    np.testing.assert_allclose(denoiser.denoise(passes).beauty, whole, rtol=1e-5, atol=1e-5)


def _frame_bytes(height, width, channels=54):
    """A frame with Cycles' passes in float32 (54 channels, as examples/noisy.exr) and the 10 output
    channels, as inference.Denoiser.denoise counts them."""
    return (channels + 10) * 4 * height * width


def test_windows_shrink_so_a_4k_frame_stays_within_the_memory_budget():
    # 1080p runs in one window, as without a memory budget: splitting it would repeat work
    tile_1080p = choose_tile(1080, 1920, 140, 16, window_budget(1080, 1920, 16, _frame_bytes(1080, 1920)))
    assert _cost(1080, 1920, tile_1080p)[0] == 1
    budget = window_budget(2160, 3840, 16, _frame_bytes(2160, 3840))
    assert budget < MAX_WINDOW_PIXELS
    windows, window, computed = _cost(2160, 3840, choose_tile(2160, 3840, 140, 16, budget))
    assert BASE_BYTES + _frame_bytes(2160, 3840) + window * WINDOW_BYTES_PER_PIXEL <= MEMORY_BUDGET
    assert windows > 1 and computed <= MAX_WORK_FACTOR * 2160 * 3840
    assert automatic_tile(2160, 3840, 140, 16, _frame_bytes(2160, 3840)) == (
        choose_tile(2160, 3840, 140, 16, budget), True)


def test_a_budget_the_caller_sets_splits_a_one_window_frame_too():
    """The default budget leaves a 1080p frame in one window (splitting it would repeat work); a budget
    the caller sets (`--max-memory`) is kept by every frame that can keep it."""
    frame_bytes = _frame_bytes(1080, 1920)
    default_tile, _within = automatic_tile(1080, 1920, 140, 16, frame_bytes)
    assert _cost(1080, 1920, default_tile)[0] == 1
    for gib in (2, 1.5):
        tile, within = automatic_tile(1080, 1920, 140, 16, frame_bytes, int(gib * 2**30))
        windows, window, computed = _cost(1080, 1920, tile)
        assert within and windows > 1 and computed <= MAX_WORK_FACTOR * 1088 * 1920
        assert BASE_BYTES + frame_bytes + window * WINDOW_BYTES_PER_PIXEL <= gib * 2**30
    # a budget a one-window frame keeps leaves it whole
    assert _cost(1080, 1920, automatic_tile(1080, 1920, 140, 16, frame_bytes, 8 * 2**30)[0])[0] == 1


@pytest.mark.parametrize("height, width, radius", [(4320, 7680, 140), (2160, 3840, 348)])
def test_windows_are_sized_for_speed_where_the_memory_budget_cannot_be_met(height, width, radius):
    """An 8K frame alone exceeds the budget; `quality`'s context (348 px) would need windows so small
    that the work triples: shrinking them would only cost time, so memory gives way."""
    tile, within = automatic_tile(height, width, radius, 16, _frame_bytes(height, width))
    assert tile == choose_tile(height, width, radius, 16) and not within
    budget = window_budget(height, width, 16, _frame_bytes(height, width))
    assert _cost(height, width, tile, radius)[1] > budget
    # a budget the caller set is not met either, but asking for less never gives larger windows
    asked, within = automatic_tile(height, width, radius, 16, _frame_bytes(height, width), 2**30)
    assert not within and _cost(height, width, asked, radius)[1] <= _cost(height, width, tile, radius)[1]


@pytest.mark.parametrize("kind", ["guided", "pooled"])
def test_frame_denoised_window_by_window_equals_the_whole_frame(tmp_path, kind):
    """Without keep_parts, a frame in several windows is decomposed and recombined window by window (no
    whole-frame decomposition held): the same pixels as the whole-frame run, NaN/Inf sanitised alike,
    and the passes, held planar as an EXR's are, left as they were."""
    passes = synthetic_passes(53, 71, seed=5)
    passes["diffuse_direct"][3, 4, 0] = np.nan
    passes["glossy_indirect"][50, 70, 1] = np.inf  # in the reflection-padded border of the last window
    planar = {name: np.ascontiguousarray(a.transpose(2, 0, 1)).transpose(1, 2, 0)
              for name, a in passes.items()}
    before = {name: a.copy() for name, a in planar.items()}
    denoiser = load_model(str(save_model(tmp_path, kind)), device="cpu")
    whole = denoiser.denoise(passes, tile=WHOLE)
    for tile in (8, 16):
        by_window = denoiser.denoise(planar, tile=tile, keep_parts=False)
        assert by_window.parts is None and not by_window.outputs
        assert by_window.nonfinite_inputs == whole.nonfinite_inputs == 2
        for name in ("beauty", "diffuse", "specular"):
            np.testing.assert_allclose(getattr(by_window, name), getattr(whole, name), rtol=1e-5, atol=1e-5,
                                       err_msg=f"{name} tile {tile}")
    for name, array in planar.items():
        np.testing.assert_array_equal(array, before[name])


def test_a_smaller_memory_budget_runs_a_large_frame_in_more_windows_with_the_same_pixels(tmp_path):
    """Denoiser.memory_budget (the command line's --max-memory) sizes the windows of a frame too large for
    one (1500 x 1500: 2.26 megapixels padded), down to what the work cap allows when the budget cannot be
    met; the pixels do not depend on it, window by window (keep_parts=False) or not."""
    passes = synthetic_passes(1500, 1500, seed=7)
    path = str(save_model(tmp_path, "pooled"))
    whole = load_model(path, device="cpu").denoise(passes, tile=WHOLE)
    windows = {}
    for gib in (0.25, 1, 8):
        seen: list[float] = []
        result = load_model(path, device="cpu", memory_budget=int(gib * 2**30)).denoise(
            passes, progress=seen.append, keep_parts=False)
        windows[gib] = len(seen)
        np.testing.assert_allclose(result.beauty, whole.beauty, rtol=1e-5, atol=1e-5, err_msg=f"{gib} GiB")
    assert windows[0.25] >= windows[1] > windows[8] > 1


@pytest.mark.parametrize("height, width, tile, radius, multiple", [
    (1, 1, 1, 3, 8), (2, 5, 1, 4, 4), (5, 3, 2, 0, 8), (9, 13, 4, 2, 8), (17, 11, 8, 5, 16),
    (53, 71, 16, 9, 8),
])
def test_windows_read_the_frame_as_reflection_padding_does(height, width, tile, radius, multiple):
    """window_of (views, np.pad at the border, gathers where a window reaches further than it holds) in
    both layouts against reflect_indices, on a planar image as an EXR's passes are held."""
    image = np.arange(3 * height * width, dtype=np.float32).reshape(3, height, width).transpose(1, 2, 0)
    for ys in axis_spans(height, tile, radius, multiple):
        for xs in axis_spans(width, tile, radius, multiple):
            rows = reflect_indices(ys.window_start, ys.window_end, height)
            cols = reflect_indices(xs.window_start, xs.window_end, width)
            expected = image[rows[:, None], cols[None, :]]
            np.testing.assert_array_equal(tiling.window_of(image, ys, xs, channels_first=False), expected)
            np.testing.assert_array_equal(tiling.window_of(image, ys, xs)[0], expected.transpose(2, 0, 1))
