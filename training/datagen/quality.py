"""Checks on rendered references (numpy only)."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.2126 + rgb[..., 1] * 0.7152 + rgb[..., 2] * 0.0722


def neighbour_max(image: np.ndarray) -> np.ndarray:
    """Largest of the 8 neighbours of every pixel (edges replicated)."""
    padded = np.pad(image, 1, mode="edge")
    windows = sliding_window_view(padded, (3, 3)).reshape(*image.shape, 9).copy()
    windows[..., 4] = -np.inf
    return windows.max(-1)


def find_fireflies(rgb: np.ndarray, k: float = 4.0) -> np.ndarray:
    """Boolean mask of firefly pixels: isolated spikes, luminance > k x every neighbour's, far above the
    image mean.

    Cycles importance-samples its pixel filter, so one rare high-energy path lands in a single pixel:
    small bright features (a visible bulb, a highlight) cover several pixels and are not flagged. A
    reference is never clamped (that would bias it); fireflies are only detected, logged in the
    manifest and used to drop patches at pack time.
    """
    lum = np.nan_to_num(luminance(rgb.astype(np.float32)), nan=0.0, posinf=1e30)
    floor = 4.0 * max(float(np.mean(np.clip(lum, 0, np.percentile(lum, 99)))), 1e-4)
    return (lum > k * neighbour_max(lum) + floor) & (lum > floor)


def firefly_stats(rgb: np.ndarray, k: float = 4.0) -> dict:
    mask = find_fireflies(rgb, k)
    return {"count": int(mask.sum()), "fraction": round(float(mask.mean()), 6),
            "nonfinite": int((~np.isfinite(rgb)).any(-1).sum())}
