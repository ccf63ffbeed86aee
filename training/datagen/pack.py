"""Pack rendered views into compact fp16 shards of importance-sampled patches (KPCN-style).

Per view and noisy sample count: the two half-sample EXRs are averaged pass by pass (exactly the
full-sample render Cycles would give), decomposed with ``denoiser_core.passes.decompose`` (the single
definition shared with inference), and the half difference gives the per-pixel standard deviation of the
mean: ``std = |a - b| / 2`` (RGB variances averaged). Radiance is scaled by one exposure factor per view
(middle grey times a random +-1.5 stops), which is exact for linear passes.

Patches: candidate positions by dart throwing (minimum distance between patch centres), each scored by
the mean of an importance map (relative colour variance + local normal variance, each normalised by its
image mean), then pruned with a keep probability proportional to the score. Patches touching a
non-finite input pixel, with more than 0.1 % firefly pixels in the reference, or overflowing fp16 are
dropped and counted.

Whole views whose reference has more than ``--max-firefly-fraction`` (0.2 %) firefly pixels are discarded
and listed in the index: light paths the inputs hardly sample cannot be learned from them.

Layout: ``OUT/packed/{split}-p{patch}/shard-00000.npy`` (N, C, P, P) float16 plus ``index.json``; with
``--full``, ``OUT/packed/{split}-full/`` holds whole views instead (validation, or random crops in training).
``--denoise-residual`` packs the specular channels as everything but diffuse light into ``<folder>-r``.
``--demodulate-specular`` packs them as specular *light* (``decompose``'s ``demodulate_specular``) plus the
noisy render's specular colour (``specular_color``, 3 more channels) into ``<folder>-d``; the reference's
specular radiance is divided by that same colour, so input and target are light in the same units and
``specular_color * specular_reference`` is the reference radiance. ``--separate-volume`` packs volume light
(and, with ``--denoise-residual``, the residual) apart from the specular buffer as ``volume`` and
``volume_reference`` (6 more channels, radiance) into ``<folder>-v``: nothing but glossy and transmission
light is then divided by the specular colour.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from denoiser_core.passes import decompose
from training.datagen import plan
from training.datagen.exr_io import read_passes
from training.datagen.quality import find_fireflies, luminance

# Stored channels, in order. *_std are stored as standard deviations (fp16-safe); datasets square them.
CHANNELS = (("diffuse", 3), ("specular", 3), ("albedo", 3), ("normal", 3), ("depth", 1),
            ("diffuse_std", 1), ("specular_std", 1), ("diffuse_reference", 3), ("specular_reference", 3),
            ("diffuse_color", 3), ("diffuse_color_reference", 3))
RADIANCE = {"diffuse", "specular", "diffuse_std", "specular_std", "diffuse_reference", "specular_reference"}
# Appended to CHANNELS in shards packed with --demodulate-specular (see channels_for).
DEMODULATED_CHANNELS = (("specular_color", 3),)
# Appended (after those) in shards packed with --separate-volume.
VOLUME_CHANNELS = (("volume", 3), ("volume_reference", 3))
RADIANCE |= {"volume", "volume_reference"}
FP16_MAX = 65504.0
SHARD_PATCHES = 256


def channels_for(demodulate_specular: bool,
                 separate_volume: bool = False) -> tuple[tuple[str, int], ...]:
    """The stored channels, in order, of shards packed with or without --demodulate-specular and
    --separate-volume."""
    return (CHANNELS + (DEMODULATED_CHANNELS if demodulate_specular else ())
            + (VOLUME_CHANNELS if separate_volume else ()))


def view_tensors(view_dir: Path, spp: int, ref, scale: float, denoise_residual: bool = False,
                 demodulate_specular: bool = False,
                 separate_volume: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) float32 stack for one noisy level of a view, and its (H, W) non-finite-input mask.

    ``ref`` is the reference's decomposition without demodulation (its specular is radiance), with the
    same ``separate_volume``."""
    a, b = read_passes(str(view_dir / f"spp{spp}_a.exr")), read_passes(str(view_dir / f"spp{spp}_b.exr"))
    bad = np.zeros(a["combined"].shape[:2], bool)
    for passes in (a, b):
        for array in passes.values():
            bad |= ~np.isfinite(array).all(-1)
    mean = {name: (a[name] + b[name]) * 0.5 for name in a if name in b}
    da, db, dm = (decompose(p, denoise_residual, demodulate_specular, separate_volume=separate_volume)
                  for p in (a, b, mean))

    def seen(parts) -> np.ndarray:  # what the specular network sees: with the volume apart, the sum
        return parts.specular if parts.volume is None else parts.specular + parts.volume

    parts = {
        "diffuse": dm.diffuse, "specular": dm.specular, "albedo": dm.albedo, "normal": dm.normal,
        "depth": dm.depth, "diffuse_color": dm.diffuse_color, "specular_color": dm.specular_color,
        "diffuse_std": np.sqrt(np.mean(((da.diffuse - db.diffuse) * 0.5) ** 2, -1, keepdims=True)),
        "specular_std": np.sqrt(np.mean(((seen(da) - seen(db)) * 0.5) ** 2, -1, keepdims=True)),
        # divided by the noisy render's colour (ones without demodulation): the target is light exactly
        # where, and as, the input is
        "diffuse_reference": ref.diffuse, "specular_reference": ref.specular / dm.specular_color,
        # the reference's own colour: behind volumes the render's Diffuse Color is noisy, and models that
        # denoise it (graph.denoise_diffuse_color) are held to this one
        "diffuse_color_reference": ref.diffuse_color,
        "volume": dm.volume, "volume_reference": ref.volume,
    }
    stack = [parts[name] * (scale if name in RADIANCE else 1.0)
             for name, _count in channels_for(demodulate_specular, separate_volume)]
    return np.concatenate(stack, -1).transpose(2, 0, 1).astype(np.float32), bad


def importance_map(stack: np.ndarray, channels=CHANNELS) -> np.ndarray:
    """KPCN-style importance: relative colour variance plus local normal variance, each mean-normalised.
    ``channels``: the stack's layout (``channels_for``)."""
    i = channel_slices(channels)
    specular = stack[i["specular"]] * (stack[i["specular_color"]] if "specular_color" in i else 1.0)
    colour = stack[i["diffuse"]] * stack[i["diffuse_color"]] + specular
    if "volume" in i:
        colour = colour + stack[i["volume"]]
    var = stack[i["diffuse_std"]][0] ** 2 + stack[i["specular_std"]][0] ** 2
    colour_term = var / (luminance(colour.transpose(1, 2, 0)) ** 2 + 1e-2)
    normal = stack[i["normal"]]
    padded = np.pad(normal, ((0, 0), (1, 1), (1, 1)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    normal_term = windows.var(axis=(-1, -2)).sum(0)
    return colour_term / (colour_term.mean() + 1e-8) + normal_term / (normal_term.mean() + 1e-8)


def channel_slices(channels=CHANNELS) -> dict[str, slice]:
    slices, start = {}, 0
    for name, count in channels:
        slices[name] = slice(start, start + count)
        start += count
    return slices


def choose_patches(importance: np.ndarray, patch: int, rng: np.random.Generator, min_dist: float,
                   tries: int = 300) -> list[tuple[int, int]]:
    """Dart throwing (min distance between top-left corners) then importance pruning."""
    h, w = importance.shape
    if h < patch or w < patch:
        return []
    accepted: list[tuple[int, int]] = []
    for _ in range(tries):
        y, x = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
        if all((y - ay) ** 2 + (x - ax) ** 2 >= min_dist ** 2 for ay, ax in accepted):
            accepted.append((y, x))
    scores = np.array([importance[y:y + patch, x:x + patch].mean() for y, x in accepted])
    keep = np.clip(scores / (np.quantile(scores, 0.6) + 1e-8), 0.15, 1.0)
    chosen = [pos for pos, p in zip(accepted, keep, strict=True) if rng.random() < p]
    return chosen or [accepted[int(np.argmax(scores))]]


def exposure_scale(ref_rgb: np.ndarray, rng: np.random.Generator) -> float:
    mean_lum = float(np.mean(np.clip(np.nan_to_num(luminance(ref_rgb)), 0, None)))
    return float(0.18 * 2.0 ** rng.uniform(-1.5, 1.5) / max(mean_lum, 1e-4))


# Version 2: the diffuse light holds the per-sample colour covariance (denoiser_core.passes, "fold").
# Version 3: the reference's Diffuse Color is stored too (diffuse_color_reference).
# Packing adds views to a folder incrementally, and one folder must not mix the layouts.
INDEX_VERSION = 3


def load_index(folder: Path, patch: int | None, denoise_residual: bool = False,
               demodulate_specular: bool = False, separate_volume: bool = False) -> dict:
    path = folder / "index.json"
    if path.exists():
        index = json.loads(path.read_text())
        if index.get("version", 1) != INDEX_VERSION:
            raise ValueError(f"{folder} was packed with an older decomposition (index version "
                             f"{index.get('version', 1)}, now {INDEX_VERSION}): remove it and pack again")
        return index
    return {"version": INDEX_VERSION,
            "channels": [list(c) for c in channels_for(demodulate_specular, separate_volume)],
            "patch": patch, "shards": [], "packed_views": [],
            "dropped": {"nonfinite": 0, "fp16_overflow": 0, "fireflies": 0}, "discarded_views": [],
            "denoise_residual": denoise_residual, "demodulate_specular": demodulate_specular,
            "separate_volume": separate_volume}


def save_atomic(path: Path, write) -> None:
    """``write(f)`` to a temporary file, then rename it to ``path``; removed again if writing fails."""
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def pack_split(out_root: Path, split: str, patch: int = 64, full: bool = False,
               max_firefly_fraction: float = 0.002, seed: int = 0, denoise_residual: bool = False,
               demodulate_specular: bool = False, separate_volume: bool = False) -> dict:
    """Pack every finished view of ``split`` not packed yet; returns counts of this run.

    ``denoise_residual``: the specular channels hold everything but diffuse light (``decompose``), for
    models that denoise emission and environment too; written to ``<folder>-r``.
    ``demodulate_specular``: the specular channels are light, with the specular colour stored beside them
    (module docstring); written to ``<folder>-d`` (``<folder>-d-r`` with both).
    ``separate_volume``: volume light (and the residual) in channels of its own; ``<folder>...-v``.
    """
    name = f"{split}-full" if full else f"{split}-p{patch}"
    name += (("-d" if demodulate_specular else "") + ("-r" if denoise_residual else "")
             + ("-v" if separate_volume else ""))
    folder = out_root / "packed" / name
    folder.mkdir(parents=True, exist_ok=True)
    index = load_index(folder, None if full else patch, denoise_residual, demodulate_specular,
                       separate_volume)
    done = set(index["packed_views"]) | set(index["discarded_views"])
    views = [r for r in plan.read_manifest(out_root) if r["split"] == split and r["id"] not in done]
    pending: list[np.ndarray] = []
    pending_meta: list[dict] = []
    stats = {"views": 0, "patches": 0, "dropped_nonfinite": 0, "dropped_fp16": 0, "dropped_fireflies": 0}

    def flush() -> None:
        if not pending:
            return
        name = f"shard-{len(index['shards']):05d}.npy"
        array = np.stack(pending).astype(np.float16)
        save_atomic(folder / name, lambda f: np.save(f, array))
        index["shards"].append({"file": name, "count": len(pending), "shape": list(array.shape[1:]),
                                "items": list(pending_meta)})
        pending.clear()
        pending_meta.clear()

    for record in sorted(views, key=lambda r: r["id"]):
        rng = np.random.default_rng([seed, record["scene_seed"]])
        view_dir = out_root / record["dir"]
        ref_passes = read_passes(str(view_dir / "reference.exr"))
        fireflies = find_fireflies(ref_passes["combined"][..., :3])  # recomputed: the rule may be newer
        if fireflies.mean() > max_firefly_fraction:
            index["discarded_views"].append(record["id"])
            continue
        ref = decompose(ref_passes, denoise_residual, separate_volume=separate_volume)
        scale = exposure_scale(ref_passes["combined"][..., :3], rng)
        for spp in record["spp"]:
            stack, bad = view_tensors(view_dir, spp, ref, scale, denoise_residual, demodulate_specular,
                                      separate_volume)
            meta = {"view": record["id"], "kind": record["kind"], "spp": spp, "ref_spp": record["ref_spp"],
                    "scale": round(scale, 6)}
            if full:
                positions, size = [(0, 0)], stack.shape[1:]
            else:
                importance = importance_map(stack, channels_for(demodulate_specular, separate_volume))
                positions, size = choose_patches(importance, patch, rng, patch / 2), (patch, patch)
            for y, x in positions:
                window = (slice(y, y + size[0]), slice(x, x + size[1]))
                crop = stack[:, window[0], window[1]]
                if bad[window].any():
                    stats["dropped_nonfinite"] += 1
                elif fireflies[window].sum() > max(1, 0.001 * crop[0].size) and not full:
                    stats["dropped_fireflies"] += 1
                elif not np.isfinite(crop).all() or np.abs(crop).max() >= FP16_MAX:
                    stats["dropped_fp16"] += 1
                else:
                    pending.append(crop)
                    pending_meta.append({**meta, "y": y, "x": x})
                    stats["patches"] += 1
                if full or len(pending) >= SHARD_PATCHES:
                    flush()
        index["packed_views"].append(record["id"])
        stats["views"] += 1
    flush()
    for key, name in (("nonfinite", "dropped_nonfinite"), ("fp16_overflow", "dropped_fp16"),
                      ("fireflies", "dropped_fireflies")):
        index["dropped"][key] += stats[name]
    save_atomic(folder / "index.json", lambda f: f.write(json.dumps(index, indent=1).encode()))
    stats["folder"] = str(folder)
    return stats
