"""Cycles multilayer EXRs for the data factory: canonical passes (through denoiser_core) and raw
channel listings for the render checks (OpenEXR 3.x + numpy; no bpy, no torch)."""

from __future__ import annotations

import numpy as np
import OpenEXR

from denoiser_core import read_exr


def read_passes(path: str, view_layer: str | None = None) -> dict[str, np.ndarray]:
    """Canonical passes (``denoiser_core.passes`` names) of one view layer (default: the first that has
    any), as (H, W, C) float32 arrays. Reading is ``denoiser_core.read_exr``'s: every part of the file
    (Blender 5.0 writes one part per pass by default), any view-layer name, half or float."""
    image = read_exr(path)
    layers = [layer for layer in image.layers if image.canonical_passes(layer)]
    if not layers or (view_layer is not None and view_layer not in layers):
        raise ValueError(f"{path}: no Cycles render passes found")
    chosen = view_layer if view_layer is not None else layers[0]
    return {name: np.array(pixels, np.float32) for name, pixels in image.canonical_passes(chosen).items()}


def exr_channel_names(path: str) -> list[str]:
    """Raw channel names as stored in the file (ungrouped, all parts), sorted."""
    with OpenEXR.File(path, separate_channels=True) as exr:
        return sorted(name for part in exr.parts for name in part.channels)


def exr_part_count(path: str) -> int:
    with OpenEXR.File(path, separate_channels=True) as exr:
        return len(exr.parts)
