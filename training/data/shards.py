"""Map-style torch dataset over the fp16 patch shards written by ``python -m training.datagen pack``.

Each item is the training-sample dict of docs/contract.md: float32 CHW tensors ``diffuse``, ``specular``,
``albedo``, ``normal``, ``depth``, ``diffuse_variance``, ``specular_variance``, ``diffuse_reference``,
``specular_reference``, ``diffuse_color`` and (index version 3) ``diffuse_color_reference``; shards
packed with ``--demodulate-specular`` add
``specular_color`` (their specular and specular reference are light: recombine with
``diffuse_color * diffuse + specular_color * specular``); shards packed with ``--separate-volume`` add
``volume`` and ``volume_reference`` (radiance, added to that sum).

Augmentation (``augment=True``): a random ``patch_size`` crop of the stored patch, a random one of the 8
flips/rotations of the square, and a random permutation of the RGB channels (the same for every colour
tensor). ``normal`` is Cycles' Denoising Normal, which is in *camera space* (x right, y up, z away from
the camera), so the geometric transforms also transform the normals: a horizontal flip negates x, a
vertical flip negates y, a transpose maps (x, y) -> (-y, -x). Depth, albedo and variances are invariant.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

COLOUR = ("diffuse", "specular", "albedo", "diffuse_reference", "specular_reference", "diffuse_color",
          "specular_color", "diffuse_color_reference", "volume", "volume_reference")
# How the specular buffer was packed (training/datagen/pack.py): index key -> the pack option that sets it.
# One dataset never mixes shards that differ in these.
PACKING_FLAGS = {"denoise_residual": "--denoise-residual", "demodulate_specular": "--demodulate-specular",
                 "separate_volume": "--separate-volume"}


def _index_files(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(path.glob("**/index.json"))
        elif path.name.endswith(".json"):
            found.append(path)
        else:
            raise ValueError(f"not a packed-shard folder or index.json: {path}")
    if not found:
        raise ValueError(f"no index.json under {list(map(str, paths))}")
    return found


def transform_sample(arrays: dict[str, np.ndarray], flip_x: bool, flip_y: bool, transpose: bool,
                     perm=(0, 1, 2)) -> dict[str, np.ndarray]:
    """One of the 8 symmetries of the square plus an RGB permutation, applied to CHW arrays."""
    out = {}
    for name, a in arrays.items():
        if flip_x:
            a = a[:, :, ::-1]
        if flip_y:
            a = a[:, ::-1, :]
        if transpose:
            a = a.transpose(0, 2, 1)
        if name == "normal":  # camera-space normals follow the image (x right, y up)
            a = a.copy()
            if flip_x:
                a[0] = -a[0]
            if flip_y:
                a[1] = -a[1]
            if transpose:
                a = np.stack([-a[1], -a[0], a[2]])
        if name in COLOUR:
            a = a[list(perm)]
        out[name] = np.ascontiguousarray(a)
    return out


def augment_sample(arrays: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random flip/rotation (normals kept consistent) and RGB permutation."""
    flip_x, flip_y, transpose = (bool(b) for b in rng.integers(0, 2, 3))
    return transform_sample(arrays, flip_x, flip_y, transpose, tuple(rng.permutation(3)))


class ShardDataset(torch.utils.data.Dataset):
    """Training samples from packed shards.

    ``paths``: packed folders (searched for index.json), index.json files, or a list of them.
    ``patch_size``: crop size (<= stored patch size; None = the stored size).
    ``whole_smaller_views``: views smaller than ``patch_size`` are taken whole (a square of their shorter
    side) instead of refused, so 128- and 256-px views train together; samples then differ in
    size, and ``training.data.sampling.batch_stream`` batches each size apart (``crop_size``).
    ``spp``: keep only these noisy sample counts. ``augment``: see module docstring; without it the
    crop is centred and nothing else changes. ``seed``: base of the per-sample augmentation RNG (each
    sample's RNG is seeded by (seed, epoch, index); call ``set_epoch`` to vary it between epochs).
    Patches with non-finite values (e.g. corrupted files) are skipped at load: ``dropped_nonfinite``.
    """

    def __init__(self, paths, patch_size: int | None = 64, augment: bool = True,
                 spp: list[int] | tuple[int, ...] | None = None, seed: int = 0,
                 whole_smaller_views: bool = False):
        self.entries: list[tuple[Path, int, dict]] = []
        self.channels: list[tuple[str, int]] | None = None
        self.denoise_residual: bool | None = None  # how the specular buffer was packed (PACKING_FLAGS)
        self.demodulate_specular: bool | None = None
        self.separate_volume: bool | None = None
        for index_file in _index_files(paths):
            index = json.loads(index_file.read_text())
            channels = [tuple(c) for c in index["channels"]]
            for flag, option in PACKING_FLAGS.items():
                packed = bool(index.get(flag, False))
                if getattr(self, flag) not in (None, packed):
                    raise ValueError(f"{index_file}: packed {'with' if packed else 'without'} {option}, "
                                     "unlike the other shards")
                setattr(self, flag, packed)
            # after the flags: they name the cause of most layout differences
            if self.channels not in (None, channels):
                raise ValueError(f"{index_file}: channel layout differs from the other shards")
            self.channels = channels
            for shard in index["shards"]:
                for row, meta in enumerate(shard["items"]):
                    if spp is None or meta["spp"] in spp:
                        self.entries.append((index_file.parent / shard["file"], row, meta))
        if not self.entries:
            raise ValueError("no patches found (wrong path or spp filter?)")
        self.patch_size, self.augment, self.seed, self.epoch = patch_size, augment, seed, 0
        self.whole_smaller_views = whole_smaller_views
        self.dropped_nonfinite = 0
        self._arrays: dict[Path, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _array(self, path: Path) -> np.ndarray:
        if path not in self._arrays:  # memory-mapped: workers share the page cache, nothing is copied
            self._arrays[path] = np.load(path, mmap_mode="r")
        return self._arrays[path]

    def raw(self, i: int) -> np.ndarray:
        path, row, _meta = self.entries[i]
        return np.asarray(self._array(path)[row], dtype=np.float32)

    def meta(self, i: int) -> dict:
        return self.entries[i][2]

    def crop_size(self, i: int) -> int:
        """Side of sample ``i``'s square crop (reads only the shard's header)."""
        path, _row, _meta = self.entries[i]
        return self._side(*self._array(path).shape[-2:])

    def _side(self, h: int, w: int) -> int:
        if self.patch_size is None or (self.whole_smaller_views and self.patch_size > min(h, w)):
            return min(h, w)
        return self.patch_size

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        for attempt in range(len(self)):
            j = (i + attempt) % len(self)
            if self.crop_size(j) != self.crop_size(i):  # a stand-in must fit the batch it joins
                continue
            data = self.raw(j)
            if np.isfinite(data).all():
                return self._sample(data, np.random.default_rng([self.seed, self.epoch, j]))
            self.dropped_nonfinite += 1
        raise RuntimeError("every patch of this crop size in the dataset has non-finite values")

    def _sample(self, data: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        _c, h, w = data.shape
        size = self._side(h, w)
        if size > min(h, w):
            raise ValueError(f"patch_size {size} is larger than the stored patches ({h}x{w})")
        if self.augment:
            y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        else:
            y, x = (h - size) // 2, (w - size) // 2
        arrays, start = {}, 0
        for name, count in self.channels:
            arrays[name] = data[start:start + count, y:y + size, x:x + size]
            start += count
        for name in ("diffuse", "specular"):
            arrays[f"{name}_variance"] = arrays.pop(f"{name}_std") ** 2
        if self.augment:
            arrays = augment_sample(arrays, rng)
        return {name: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
                for name, a in arrays.items()}
