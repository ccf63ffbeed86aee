"""Temporal stability for sequences: blend each frame's denoised light with the reprojected history.

A per-frame denoiser leaves a little low-frequency noise that differs from frame to frame, so flat surfaces
shimmer in an animation. This filter runs after the networks (no retraining) on the two parts the networks
produce, the demodulated diffuse light and the specular buffer (radiance, or light for models that
demodulate specular; a model's volume buffer joins it), and on Diffuse Color, before ``passes.recombine``
multiplies the colours back in. Diffuse Color keeps history only where the image does not move
(``color_motion``), so textures are never resampled under motion.

For every pixel of frame t:

1. **Reproject.** Cycles' Vector pass holds, in its first two channels, the screen offset from a pixel to
   where its surface was in the previous frame (x to the right, y up, in pixels). The history (the filtered
   parts of frame t-1) is sampled there with bilinear weights.
2. **Reject what does not belong.** Each of the four bilinear taps must see the same surface: relative
   depth within ``depth_tolerance`` and normals within ``normal_cos`` (disocclusions fail this). Taps that
   fail are dropped and the rest renormalised; a pixel left with too little weight has no history.
3. **Clamp** the history to the current frame's local neighbourhood (mean +- ``clamp_sigmas`` standard
   deviations over a ``clamp_radius`` window, widened by ``clamp_relative`` of the local mean to leave
   room for the residual noise being removed), as temporal anti-aliasing does: shading that changed (a
   moving shadow or highlight) does not drag the old colour along.
4. **Shading test.** Where the local mean (``change_radius``) of the diffuse light or the specular moved by
   more than ``change_low`` relative to the history's, the current frame's weight rises, to 1 at
   ``change_high`` (a moving shadow on a static floor passes every geometric test).
5. **Blend** ``alpha * current + (1 - alpha) * history`` with ``alpha = max(1 / (n + 1), min_alpha)``, n the
   frames the history averages at that pixel (fewer where the shading test raised alpha). With no history
   n = 0 and alpha = 1: the output is the per-frame result exactly (first frame, disocclusions, and cuts).

A **cut** is detected when fewer than ``cut_fraction`` of the pixels find history: then no pixel keeps any.

The state a frame hands to the next (``History``) is written into its output EXR (``HISTORY_PASS``), so a
sequence resumed at frame N continues exactly as an uninterrupted run would.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .errors import DenoiserError
from .inference import DenoiseResult
from .models import COLOUR_OUTPUT, VOLUME_OUTPUT
from .passes import missing_passes_hint, sanitize, sanitize_guide

# Written into each temporal output: History.packed(), the filtered FILTERED parts and the frame count,
# as these channels (EXR files keep channels in name order, so they are read back by name).
HISTORY_PASS = "Temporal History"
HISTORY_COMPONENTS = ["DR", "DG", "DB", "SR", "SG", "SB", "CR", "CG", "CB", "N"]


@dataclass(frozen=True)
class TemporalSettings:
    min_alpha: float = 0.1          # at most ~10 frames of history: lag and ghosting stay bounded
    depth_tolerance: float = 0.1    # relative depth difference of one surface between frames
    normal_cos: float = 0.9         # ~25 degrees
    min_weight: float = 0.5         # bilinear weight that must survive rejection
    clamp_radius: int = 2           # 5x5 neighbourhood
    clamp_sigmas: float = 2.0
    clamp_relative: float = 0.15    # residual noise of the per-frame result, as a share of the local mean
    cut_fraction: float = 0.5
    change_low: float = 0.05        # relative change of the local mean tolerated as leftover noise ...
    change_high: float = 0.15       # ... and beyond which the history is dropped (blend ramps between)
    change_radius: int = 2
    change_floor: float = 0.02      # radiance below which changes count as absolute, not relative
    color_motion: float = 0.1       # Diffuse Color keeps history only where the motion is below this (px)


@dataclass
class FrameGuides:
    """What reprojection needs of one frame: (H, W, 1) depth, (H, W, 3) normal, (H, W, 2+) Vector pass."""

    depth: np.ndarray
    normal: np.ndarray
    vector: np.ndarray


# The per-frame quantities the filter blends: the networks' two outputs and the albedo they are multiplied
# by. Diffuse Color is filtered too: at texture and object edges each frame's samples hit the colours in
# different proportions, and that flicker is as large as the denoised light's own (docs/temporal.md).
FILTERED = ("diffuse", "specular", "diffuse_color")


@dataclass
class History:
    """The filtered parts of one frame (``FILTERED`` -> (H, W, 3)), as the next frame reprojects them."""

    parts: dict[str, np.ndarray]
    frames: np.ndarray      # (H, W, 1) frames accumulated per pixel (1 where the frame stood alone)
    guides: FrameGuides

    def packed(self) -> np.ndarray:
        """(H, W, 10) for ``HISTORY_PASS``: every filtered part, then the frame count."""
        return np.concatenate([*(self.parts[name] for name in FILTERED), self.frames], axis=-1)

    @classmethod
    def unpacked(cls, packed: np.ndarray, guides: FrameGuides) -> History:
        parts = {name: packed[..., 3 * i:3 * i + 3] for i, name in enumerate(FILTERED)}
        return cls(parts=parts, frames=packed[..., 9:10], guides=guides)


@dataclass
class TemporalResult:
    parts: dict[str, np.ndarray]   # FILTERED -> filtered (H, W, 3)
    history: History
    history_fraction: float        # pixels that used history (0 on the first frame and after a cut)
    cut: bool


def box_mean(image: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window with edge replication, (H, W, C) -> (H, W, C), via summed areas."""
    size = 2 * radius + 1
    padded = np.pad(image.astype(np.float64), ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    summed = np.pad(padded.cumsum(0).cumsum(1), ((1, 0), (1, 0), (0, 0)))
    total = summed[size:, size:] - summed[:-size, size:] - summed[size:, :-size] + summed[:-size, :-size]
    return (total / (size * size)).astype(np.float32)


def reproject(history: History, guides: FrameGuides, settings: TemporalSettings):
    """History sampled at each pixel's previous position: (parts, frames, valid mask)."""
    height, width = guides.depth.shape[:2]
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    # Vector.xy: offset to the previous position, x right and y up; image rows grow downwards.
    prev_x = cols + guides.vector[..., 0]
    prev_y = rows - guides.vector[..., 1]
    x0, y0 = np.floor(prev_x), np.floor(prev_y)
    fx, fy = prev_x - x0, prev_y - y0
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    depth = guides.depth[..., 0]
    normal = guides.normal
    total = np.zeros((height, width), np.float32)
    sums = {name: np.zeros((height, width, 3), np.float32) for name in FILTERED}
    frames = np.zeros((height, width, 1), np.float32)
    for dy, dx, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                           (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        ty, tx = y0 + dy, x0 + dx
        inside = (ty >= 0) & (ty < height) & (tx >= 0) & (tx < width)
        ty, tx = np.clip(ty, 0, height - 1), np.clip(tx, 0, width - 1)
        tap_depth = history.guides.depth[ty, tx, 0]
        same_depth = np.abs(tap_depth - depth) <= settings.depth_tolerance * np.maximum(np.abs(depth), 1e-6)
        same_normal = np.sum(history.guides.normal[ty, tx] * normal, axis=-1) >= settings.normal_cos
        # no surface in either frame (background: zero normals) matches only another background pixel
        background = ~np.any(normal, axis=-1)
        tap_background = ~np.any(history.guides.normal[ty, tx], axis=-1)
        same_normal |= background & tap_background
        keep = (inside & same_depth & same_normal).astype(np.float32) * weight
        total += keep
        for name, accumulated in sums.items():
            accumulated += keep[..., None] * history.parts[name][ty, tx]
        frames += keep[..., None] * history.frames[ty, tx]
    valid = total >= settings.min_weight
    scale = np.where(valid, 1.0 / np.maximum(total, 1e-6), 0.0)[..., None]
    return {name: value * scale for name, value in sums.items()}, frames * scale, valid


def neighbourhood_clamp(history: np.ndarray, current: np.ndarray, settings: TemporalSettings) -> np.ndarray:
    """``history`` clipped to the current frame's local mean +- (sigmas * std + relative * |mean|)."""
    mean = box_mean(current, settings.clamp_radius)
    variance = np.maximum(box_mean(current * current, settings.clamp_radius) - mean * mean, 0.0)
    margin = settings.clamp_sigmas * np.sqrt(variance) + settings.clamp_relative * np.abs(mean)
    return np.clip(history, mean - margin, mean + margin)


def shading_change(past: np.ndarray, current: np.ndarray, settings: TemporalSettings) -> np.ndarray:
    """(H, W, 1) blend weight the current frame needs where the local mean moved (a shadow or highlight
    that moved): 0 up to ``change_low`` relative change, 1 from ``change_high``."""
    past_mean = box_mean(past.mean(axis=-1, keepdims=True), settings.change_radius)
    current_mean = box_mean(current.mean(axis=-1, keepdims=True), settings.change_radius)
    change = np.abs(past_mean - current_mean) / (np.maximum(past_mean, current_mean) + settings.change_floor)
    return np.clip((change - settings.change_low) / (settings.change_high - settings.change_low), 0.0, 1.0)


def temporal_filter(parts: dict[str, np.ndarray], guides: FrameGuides, history: History | None,
                    settings: TemporalSettings = TemporalSettings()) -> TemporalResult:
    """Blend one frame's per-frame ``parts`` (``FILTERED`` -> (H, W, 3)) with ``history``."""
    parts = {name: parts[name] for name in FILTERED}
    ones = np.ones(guides.depth.shape[:2] + (1,), np.float32)
    if history is None or history.frames.shape != ones.shape:
        return TemporalResult(parts, History(parts, ones, guides), 0.0, cut=False)
    past, past_frames, valid = reproject(history, guides, settings)
    fraction = float(valid.mean())
    if fraction < settings.cut_fraction:
        return TemporalResult(parts, History(parts, ones, guides), 0.0, cut=True)
    frames = np.where(valid[..., None], past_frames, 0.0)
    # pixels without history take the current frame's values, so the local means below see no holes
    past = {name: np.where(valid[..., None], value, parts[name]) for name, value in past.items()}
    alpha = np.maximum(1.0 / (frames + 1.0), settings.min_alpha)
    for name in ("diffuse", "specular"):
        alpha = np.maximum(alpha, shading_change(past[name], parts[name], settings))
    still = np.hypot(guides.vector[..., 0], guides.vector[..., 1])[..., None] < settings.color_motion
    filtered = {}
    for name, current in parts.items():
        clamped = neighbourhood_clamp(past[name], current, settings)
        blended = alpha * current + (1.0 - alpha) * clamped
        keep = valid[..., None] & (still if name == "diffuse_color" else True)
        filtered[name] = np.where(keep, blended, current).astype(np.float32)
    # frames the blend averages: n + 1 for a running mean, fewer where the shading test raised alpha
    accumulated = np.where(valid[..., None], 1.0 / alpha, 1.0)
    return TemporalResult(filtered, History(filtered, accumulated.astype(np.float32), guides), fraction,
                          cut=False)


def frame_guides(passes: dict[str, np.ndarray]) -> FrameGuides:
    """Reprojection guides of one view layer's canonical passes; the Vector pass must be there."""
    if "vector" not in passes:
        raise DenoiserError(f"temporal mode needs the Vector pass: {missing_passes_hint(['vector'])}; "
                            "Cycles writes it only with Motion Blur off")
    return FrameGuides(depth=sanitize_guide("depth", passes["denoising_depth"][..., :1]),
                       normal=sanitize_guide("normal", passes["denoising_normal"][..., :3]),
                       vector=sanitize(passes["vector"])[..., :2])


def filter_result(result: DenoiseResult, guides: FrameGuides, history: History | None,
                  settings: TemporalSettings = TemporalSettings()) -> tuple[DenoiseResult, TemporalResult]:
    """A per-frame ``result`` (Denoiser.denoise) blended with ``history`` and recombined as the per-frame
    result is (``passes.recombine``); with no history it is returned unchanged.

    For a model with volume light apart the specular part is the specular radiance plus the denoised
    volume buffer (``volume_denoised``), so the history keeps one layout for every model and volume light
    never passes through Glossy Color (noisy behind fog); the filtered sum is then recombined as radiance
    (specular colour 1), the volume as zero."""
    parts = result.parts
    specular = result.outputs["specular_denoised"]
    volume = result.outputs.get(VOLUME_OUTPUT)
    if volume is not None:  # the per-frame result's specular radiance, volume included
        specular = result.specular
        parts = replace(parts, specular_color=np.ones_like(parts.specular_color))
    step = temporal_filter({"diffuse": result.outputs["diffuse_denoised"], "specular": specular,
                            "diffuse_color": parts.diffuse_color}, guides, history, settings)
    if step.history_fraction == 0.0:
        return result, step
    outputs = {**result.outputs, "diffuse_denoised": step.parts["diffuse"],
               "specular_denoised": step.parts["specular"]}
    if volume is not None:
        outputs[VOLUME_OUTPUT] = np.zeros_like(volume)
    if COLOUR_OUTPUT in outputs:  # from_parts takes a model's denoised colour from its outputs
        outputs[COLOUR_OUTPUT] = step.parts["diffuse_color"]
    filtered_parts = replace(parts, diffuse_color=step.parts["diffuse_color"])
    return DenoiseResult.from_parts(filtered_parts, outputs, nonfinite_inputs=result.nonfinite_inputs,
                                    seconds=result.seconds), step
