"""A sequence denoised as one shot in temporal mode (``kprcan denoise --temporal``).

Frames are denoised in order, each blended with the previous one's filtered result (denoiser_core.temporal).
Each output keeps the state the next frame needs in its ``Temporal History`` pass, so a run that stops at
frame N and is started again continues from the finished frames exactly as an uninterrupted run would
(exactly in float32 outputs; to half precision with ``--half``). A gap in the frame numbers starts a new
history, as a cut does.

A shot is one unit of work: one worker claims it whole (denoiser_core.claims, ``shot_marker_for`` its first
output), and
other workers started on the same shot wait for it and then find every frame done; if the worker dies,
its claim goes stale and a waiting worker resumes the shot. Several machines therefore share work shot by
shot, not frame by frame (docs/temporal.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .claims import POLL_SECONDS, claim
from .errors import DenoiserError
from .exr import read_exr
from .inference import DEFAULT_TILE, Denoiser, DenoiseResult
from .pipeline import denoise_file, remove_stale_temporaries
from .sequence import expand_pattern, is_pattern, plan_jobs
from .temporal import HISTORY_COMPONENTS, HISTORY_PASS, History, TemporalSettings, filter_result, frame_guides

log = logging.getLogger("kprcan")



def read_history(source: Path, output: Path) -> dict[str, History]:
    """Per view layer, the history a finished temporal output hands to the next frame (none for outputs
    written without temporal mode)."""
    finished, noisy = read_exr(output), read_exr(source)
    histories = {}
    for layer in finished.layers:
        stored = finished.find(layer, HISTORY_PASS)
        if stored is not None and layer in noisy.layers:
            if sorted(stored.components) != sorted(HISTORY_COMPONENTS):
                raise DenoiserError(f"{output}: pass {HISTORY_PASS!r} of view layer {layer!r} has channels "
                                    f"{stored.components}, expected {HISTORY_COMPONENTS}")
            # EXR files keep channels in name order: put them back in History.packed()'s order
            packed = np.stack([stored.pixels[stored.components.index(c)] for c in HISTORY_COMPONENTS], -1)
            histories[layer] = History.unpacked(packed, frame_guides(noisy.canonical_passes(layer)))
    return histories


def denoise_shot(frames: list[tuple[int, Path, Path]], denoiser: Denoiser, *, tile: int = DEFAULT_TILE,
                 overwrite: bool = False, half: bool = False, settings: TemporalSettings | None = None,
                 shot_marker: Path | None = None, progress: Callable[[float], None] | None = None,
                 cancel: Callable[[], bool] | None = None) -> int:
    """Denoise ``frames`` ((frame number, input, output), in order) as one shot; returns frames written.

    ``shot_marker`` is the path claimed for the whole shot (default: ``shot_marker_for`` the first output,
    the same for the command line and the Blender extension). Frames whose output exists are skipped
    unless ``overwrite``; their stored history carries on to the next frame. After waiting for another
    worker that finished the shot, its frames count as done even with ``overwrite``. ``cancel`` is polled
    while waiting and between tiles (denoise_file); frames finished before it are kept.
    """
    marker = shot_marker or shot_marker_for(frames[0][2])
    held, waited = claim(marker), False
    while held is None:
        if not waited:
            log.info("another worker is denoising this shot; waiting for it")
        waited = True
        if cancel is not None and cancel():
            raise DenoiserError("cancelled")
        time.sleep(POLL_SECONDS)
        held = claim(marker)
    with held:
        redo = overwrite and not (waited and not held.took_over)  # a finished shot is not redone
        return _denoise_claimed_shot(frames, denoiser, tile, redo, half, settings or TemporalSettings(),
                                     progress, cancel)


def shot_marker_for(first_output: Path) -> Path:
    """The path whose claim (claims.claim) stands for a whole shot: beside its first output, distinct
    from that frame's own claim."""
    return first_output.with_name(first_output.name + ".shot")


def _denoise_claimed_shot(frames, denoiser, tile, overwrite, half, settings, progress, cancel) -> int:
    history: dict[str, History] = {}
    finished_before: tuple[Path, Path] | None = None  # the last skipped frame, read only if needed
    previous, written = None, 0
    for index, (number, source, target) in enumerate(frames):
        if previous is not None and number != previous + 1:
            history, finished_before = {}, None  # frames missing in between: a new history
        previous = number
        if target.exists() and not overwrite:
            finished_before = (source, target)
            continue
        if finished_before is not None:
            history, finished_before = read_history(*finished_before), None
        remove_stale_temporaries(target)  # the shot's claim covers every frame
        refine = _Refine(history, settings, source)

        def frame_progress(fraction: float, index: int = index) -> None:
            if progress is not None:
                progress((index + fraction) / len(frames))

        denoise_file(source, target, denoiser, tile=tile, overwrite=overwrite, half=half,
                     progress=frame_progress, cancel=cancel, refine=refine)
        history, written = refine.updated, written + 1
    return written


class _Refine:
    """denoise_file's per-layer hook for one frame: the temporal filter, and the history pass to store."""

    def __init__(self, history: dict[str, History], settings: TemporalSettings, source: Path):
        self.history, self.settings, self.source = history, settings, source
        self.updated: dict[str, History] = {}  # the history the next frame reprojects

    def __call__(self, layer: str, passes: dict[str, np.ndarray], result: DenoiseResult):
        filtered, step = filter_result(result, frame_guides(passes), self.history.get(layer), self.settings)
        self.updated[layer] = step.history
        if step.cut:
            log.info("%s: a cut (little of the previous frame is visible): history restarts", self.source)
        return filtered, {HISTORY_PASS: (HISTORY_COMPONENTS, step.history.packed())}


def plan_shot(input_pattern: str, output: str) -> list[tuple[int, Path, Path]]:
    """(frame, input, output) of a ``shot_####.exr`` sequence for ``--temporal``, in frame order; the
    output is a pattern or a folder, checked as ``sequence.plan_jobs`` checks every run."""
    if not is_pattern(input_pattern):
        raise DenoiserError(f"{input_pattern}: --temporal denoises a sequence; give a pattern like "
                            "shot_####.exr")
    numbers = [number for number, _source in expand_pattern(input_pattern)]
    return [(number, source, target)
            for number, (source, target) in zip(numbers, plan_jobs([input_pattern], output), strict=True)]
