"""Read Cycles multilayer EXRs into canonical passes (OpenEXR 3.x + numpy; no bpy, no torch)."""

from __future__ import annotations

import numpy as np
import OpenEXR

from denoiser_core.passes import canonical_pass_name

_COMPONENT_ORDER = {"R": 0, "G": 1, "B": 2, "A": 3, "X": 0, "Y": 1, "Z": 2, "V": 0, "U": 1, "W": 3}


def read_layers(path: str) -> dict[str, np.ndarray]:
    """``{"ViewLayer.DiffDir": (H, W, C) float32, ...}`` for all parts of a multilayer EXR.

    Blender 4.x writes one interleaved part; Blender 5.0 by default writes one part per pass (multi-part
    EXR), so every part is read. OpenEXR 3 already groups ``X.R``/``X.G``/``X.B`` into one (H, W, 3)
    array named ``X``; channels it does not group (``.X/.Y/.Z`` normals, a lone ``.Z`` depth) are
    stacked here in component order.
    """
    with OpenEXR.File(path, separate_channels=False) as exr:
        channels = {name: np.array(ch.pixels) for part in exr.parts for name, ch in part.channels.items()}
    grouped: dict[str, list[tuple[int, np.ndarray]]] = {}
    for name, pixels in channels.items():
        if pixels.ndim == 3:
            grouped[name] = [(0, pixels)]
            continue
        prefix, _, component = name.rpartition(".")
        if not prefix or component not in _COMPONENT_ORDER:
            prefix, component = name, "V"
        grouped.setdefault(prefix, []).append((_COMPONENT_ORDER[component], pixels[..., None]))
    return {name: np.concatenate([p for _o, p in sorted(parts, key=lambda t: t[0])], axis=-1)
            .astype(np.float32) for name, parts in grouped.items()}


def split_layer_name(full_name: str) -> tuple[str, str]:
    """``"ViewLayer.Denoising Albedo"`` -> ("ViewLayer", "Denoising Albedo")."""
    view_layer, _, pass_name = full_name.partition(".")
    return (view_layer, pass_name) if pass_name else ("", view_layer)


def read_passes(path: str, view_layer: str | None = None) -> dict[str, np.ndarray]:
    """Canonical passes (``denoiser_core.passes`` names) of one view layer (default: the first found)."""
    layers = read_layers(path)
    passes: dict[str, np.ndarray] = {}
    for full_name in sorted(layers):
        layer, pass_name = split_layer_name(full_name)
        if view_layer is None:
            view_layer = layer
        if layer != view_layer:
            continue
        canonical = canonical_pass_name(pass_name)
        if canonical is not None:
            passes[canonical] = layers[full_name]
    if not passes:
        raise ValueError(f"{path}: no Cycles render passes found")
    return passes


def exr_channel_names(path: str) -> list[str]:
    """Raw channel names as stored in the file (ungrouped, all parts), sorted."""
    with OpenEXR.File(path, separate_channels=True) as exr:
        return sorted(name for part in exr.parts for name in part.channels)


def exr_part_count(path: str) -> int:
    with OpenEXR.File(path, separate_channels=True) as exr:
        return len(exr.parts)
