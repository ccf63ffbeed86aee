"""Overlapping tiles whose stitched result equals one run over the whole image.

The image is (virtually) padded by reflection at the bottom/right to a multiple of the model's
``size_multiple``. It is cut into near-equal *cores* of at most ``tile`` pixels (rounded up to the
multiple); each core is run inside a *window* that adds ``receptive_radius`` pixels of context on every
side (less at the image border, where the whole-image run sees the same border). Window origins and sizes
are multiples of ``size_multiple`` so strided layers see the same sampling grid as in the whole-image run,
and every window has the same size so the runtime sees one input shape (memory planning, TensorRT
engines). The result is then exactly the whole-image result, with memory bounded by the window size
instead of the image size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import DenoiserError
from .passes import all_finite


@dataclass(frozen=True)
class Span:
    """One tile along one axis: the core it produces and the window it reads (padded coordinates)."""

    core_start: int
    core_end: int
    window_start: int
    window_end: int


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def axis_spans(length: int, tile: int, radius: int, multiple: int) -> list[Span]:
    """Tiles along an axis of ``length`` pixels (cores clipped to ``length``, windows in padded space)."""
    padded = round_up(length, multiple)
    largest = round_up(max(tile, 1), multiple)
    margin = round_up(radius, multiple)
    if largest + 2 * margin >= padded:  # one window holds the whole axis: a single run, no repeated work
        return [Span(0, length, 0, padded)]
    # near-equal cores of at most ``tile``: 1088 rows in tiles of 512 run as 368 + 368 + 352, not as
    # 512 + 512 + a 64-row sliver that costs a whole window
    count = -(-padded // largest)
    core = round_up(-(-padded // count), multiple)
    window = core + 2 * margin
    spans = []
    for start in range(0, padded, core):
        window_start = min(max(start - margin, 0), padded - window)
        spans.append(Span(start, min(start + core, length), window_start, window_start + window))
    return spans


AUTO_TILE = 0  # a tile of 0 (or less) asks choose_tile for one
# Largest window (core plus context) choose_tile aims for, in pixels. A 1080p frame padded for the shipped
# models (1088 x 1920) fits in one window: no overlap is computed twice.
MAX_WINDOW_PIXELS = 2_100_000
# ...unless the overlaps would then multiply the work: a model with a context of several hundred pixels
# would need thousands of tiny cores to stay within the budget. Work is capped at this many times the
# padded image's pixels, and memory gives way.
MAX_WORK_FACTOR = 3.0
# A frame that needs several windows anyway gets windows small enough that it stays within MEMORY_BUDGET
# (window_budget, automatic_tile). A window costs ~1.25 KB per pixel: onnxruntime's buffers (0.9-1.1 KB,
# measured on both shipped models, 2026-11-28; more in the first run of a window size) and the window's
# inputs. A 4K frame with Cycles' passes in float32 takes ~2 GiB itself with its outputs, which leaves
# windows of ~0.7 megapixels for `fast`. Under the default budget a frame of one window (1080p) is not
# split for memory, as that would repeat work, nor are the windows of a model whose context is too wide to
# meet the budget (`quality`); a budget the caller sets (`kprcan denoise --max-memory`) splits any frame.
MEMORY_BUDGET = 3 * 2**30
WINDOW_BYTES_PER_PIXEL = 1250
BASE_BYTES = 150 * 2**20  # the interpreter, numpy, onnxruntime and the model


def window_budget(height: int, width: int, multiple: int, frame_bytes: int,
                  memory_budget: int = MEMORY_BUDGET, *, split_one_window: bool = False) -> int:
    """The largest window, in pixels, for choose_tile: windows that keep a frame whose passes and outputs
    take ``frame_bytes`` within ``memory_budget`` (automatic_tile lets memory give way where that would
    multiply the work). A frame that fits in one window gets MAX_WINDOW_PIXELS unless
    ``split_one_window``."""
    if (not split_one_window
            and round_up(height, multiple) * round_up(width, multiple) <= MAX_WINDOW_PIXELS):
        return MAX_WINDOW_PIXELS
    spare = memory_budget - BASE_BYTES - frame_bytes
    return int(min(MAX_WINDOW_PIXELS, max(spare, 0) // WINDOW_BYTES_PER_PIXEL))


def automatic_tile(height: int, width: int, radius: int, multiple: int, frame_bytes: int,
                   memory_budget: int | None = None) -> tuple[int, bool]:
    """The tile edge of an automatic run, and whether its windows keep the frame within the budget:
    choose_tile within window_budget. A budget the caller set applies to every frame; the default one
    (None: MEMORY_BUDGET) only to frames that need several windows anyway. Where no window within the
    budget keeps the work under MAX_WORK_FACTOR (a model with a wide context, or a frame that alone exceeds
    the budget), a budget the caller set gets the smallest windows within that work; the default budget
    gets the windows sized for speed alone, as shrinking them would cost time without reaching it."""
    budget = window_budget(height, width, multiple, frame_bytes,
                           MEMORY_BUDGET if memory_budget is None else memory_budget,
                           split_one_window=memory_budget is not None)
    tile = choose_tile(height, width, radius, multiple, budget)
    window_height, window_width = window_size(axis_spans(height, tile, radius, multiple),
                                              axis_spans(width, tile, radius, multiple))
    within = window_height * window_width <= budget
    if not within and memory_budget is None:
        tile = choose_tile(height, width, radius, multiple)
    return tile, within


def window_size(rows: list[Span], cols: list[Span]) -> tuple[int, int]:
    """(height, width) of the windows of a frame cut into ``rows`` x ``cols`` (axis_spans): all windows
    have one size."""
    return rows[0].window_end - rows[0].window_start, cols[0].window_end - cols[0].window_start


def choose_tile(height: int, width: int, radius: int, multiple: int,
                max_window_pixels: int | None = None) -> int:
    """A core edge for ``run_tiled``: the fewest pixels computed (cores plus their overlaps) with windows
    of at most ``max_window_pixels`` (default MAX_WINDOW_PIXELS); where that costs more than
    MAX_WORK_FACTOR times the image's pixels, the smallest window within that much work. Ties: the
    larger tile."""
    budget = MAX_WINDOW_PIXELS if max_window_pixels is None else max_window_pixels
    work_cap = MAX_WORK_FACTOR * round_up(max(height, 1), multiple) * round_up(max(width, 1), multiple)
    plans = []  # (pixels computed, window pixels, tile)
    for tile in range(multiple, round_up(max(height, width, 1), multiple) + 1, multiple):
        rows = axis_spans(height, tile, radius, multiple)
        cols = axis_spans(width, tile, radius, multiple)
        window_height, window_width = window_size(rows, cols)
        window = window_height * window_width
        plans.append((len(rows) * len(cols) * window, window, tile))
    within = [p for p in plans if p[1] <= budget]
    if within:
        computed, _window, tile = min(within, key=lambda p: (p[0], -p[2]))
        if computed <= work_cap:
            return tile
    # the single window (largest tile) always computes exactly the padded image, so this is never empty
    return min((p for p in plans if p[0] <= work_cap), key=lambda p: (p[1], -p[2]))[2]


def reflect_indices(start: int, end: int, length: int) -> np.ndarray:
    """Source indices for padded positions [start, end): identity inside, mirror (no edge repeat) beyond."""
    index = np.arange(start, end)
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    index = np.mod(index, period)
    return np.where(index >= length, period - index, index)


def window_of(image: np.ndarray, ys: Span, xs: Span, channels_first: bool = True) -> np.ndarray:
    """(1, C, h, w) float32 window of an (H, W, C) image, reflection-padded where it leaves the image.

    With ``channels_first`` False an (h, w, C) window, read-only: a view of the image where the window
    lies inside it (no copy of ~50 passes per window), else a copy."""
    height, width = image.shape[:2]
    planes = image.transpose(2, 0, 1)  # contiguous when the image is a view of planar (EXR) storage
    block = planes[:, ys.window_start:min(ys.window_end, height), xs.window_start:min(xs.window_end, width)]
    below, right = ys.window_end - min(ys.window_end, height), xs.window_end - min(xs.window_end, width)
    if below < block.shape[1] and right < block.shape[2]:
        if below or right:  # mirrored rows/columns lie inside the window: one padded copy
            block = np.pad(block, ((0, 0), (0, below), (0, right)), mode="reflect")
    else:  # a window reaching further than it holds (tiny images): mirror the whole image
        block = planes.take(reflect_indices(ys.window_start, ys.window_end, height), axis=1)
        block = block.take(reflect_indices(xs.window_start, xs.window_end, width), axis=2)
    if channels_first:
        return np.ascontiguousarray(block[None], dtype=np.float32)
    block = block.astype(np.float32, copy=False).transpose(1, 2, 0)
    block.flags.writeable = False
    return block


def run_tiled(
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    inputs: dict[str, np.ndarray],
    output_channels: dict[str, int],
    tile: int,
    radius: int,
    multiple: int,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    *,
    channels_first: bool = True,
    out: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Run ``run`` (NCHW feeds -> NCHW outputs) over tiles of ``inputs`` ((H, W, C) arrays of one size).

    Returns (H, W, C) float32 outputs, finite everywhere (NaN/Inf a network produces become 0), written
    into ``out`` when given ((H, W, C) arrays, views of planar storage allowed). Without ``out`` they are
    planar ((C, H, W) storage); an image that is one window gets views of ``run``'s own outputs (no
    copy). A ``tile`` of AUTO_TILE (0) or less is chosen by ``choose_tile``. With ``channels_first``
    False ``run`` gets (h, w, C) windows; it is handed the only reference to its feeds, so it may drop
    them before its heavy work.
    """
    height, width = next(iter(inputs.values())).shape[:2]
    if tile <= AUTO_TILE:
        tile = choose_tile(height, width, radius, multiple)
    rows = axis_spans(height, tile, radius, multiple)
    cols = axis_spans(width, tile, radius, multiple)
    total = len(rows) * len(cols)
    one_window = total == 1 and out is None  # its outputs are views of run's: nothing to paste into
    outputs = out if out is not None or one_window else {
        name: np.empty((c, height, width), np.float32).transpose(1, 2, 0)
        for name, c in output_channels.items()}
    done = 0
    for ys in rows:
        for xs in cols:
            if cancel is not None and cancel():
                raise DenoiserError("cancelled")
            results = run({name: window_of(image, ys, xs, channels_first) for name, image in inputs.items()})
            window_shape = (ys.window_end - ys.window_start, xs.window_end - xs.window_start)
            blocks = {name: _finite_core(results[name], name, channels, window_shape, ys, xs)
                      for name, channels in output_channels.items()}
            if one_window:
                outputs = blocks
            else:
                for name, block in blocks.items():
                    outputs[name][ys.core_start:ys.core_end, xs.core_start:xs.core_end] = block
            done += 1
            if progress is not None:
                progress(done / total)
    return outputs


def check_output_shape(name: str, result: np.ndarray, expected: tuple[int, ...]) -> None:
    if result.shape != expected:
        raise DenoiserError(f"model output {name} has shape {tuple(result.shape)}, expected {expected}",
                            exit_code=1)


def _finite_core(result: np.ndarray, name: str, channels: int, window_shape: tuple[int, int],
                 ys: Span, xs: Span) -> np.ndarray:
    """The (h, w, C) core of a window's (1, C, H, W) output ``result``: a view, or a finite copy where
    the output holds NaN/Inf."""
    check_output_shape(name, result, (1, channels, *window_shape))
    y0, x0 = ys.core_start - ys.window_start, xs.core_start - xs.window_start
    core = result[0, :, y0:y0 + ys.core_end - ys.core_start, x0:x0 + xs.core_end - xs.core_start]
    block = core.transpose(1, 2, 0)
    if not all_finite(block):  # one sum where all is finite, as a checked model's outputs are
        block = np.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0)
    return block
