"""Packed shards squeezed into one file for a machine that only takes a small upload (a rented GPU, a
colleague's box), and unpacked there into the same folders ``ShardDataset`` reads.

    python -m training.datagen bundle --out data/bundle.zip --whole data/packed/val-full \
        --fill data/packed/train-full --max-mb 40
    python -m training.datagen unbundle data/bundle.zip --out data/bundle   # -> data/bundle/train-full, ...

``--whole`` folders go in entirely; ``--fill`` folders add whole views in a seeded random order while the
bundle stays under ``--max-mb``. Where one upload is too small, ``--after`` leaves out the views earlier
bundles hold, and ``unbundle`` takes them all, merging each folder's parts:

    python -m training.datagen bundle --out b1.zip --fill data/packed/train-full --max-mb 60
    python -m training.datagen bundle --out b2.zip --whole data/packed/val-full \
        --fill data/packed/train-full --max-mb 60 --after b1.zip
    python -m training.datagen unbundle b1.zip b2.zip --out data/bundle

Each shard is stored as its fp16 bits, rounded to fewer mantissa bits
(``MANTISSA_BITS``: the rounding error, at most 2^-(bits+1) relative, sits far below the Monte Carlo noise
of the inputs and of the references), high bytes before low bytes, and xz-compressed: about 4.3x smaller
than the .npy files, against 2.7x lossless (``--lossless`` keeps every bit). A zip of stored members, so a
half-written bundle fails to open instead of unpacking part of a view.
"""

from __future__ import annotations

import json
import lzma
import os
import random
import zipfile
from pathlib import Path

import numpy as np

from training.datagen.pack import save_atomic

# Mantissa bits kept of fp16's 10: references keep more (they are the targets), the per-pixel noise
# estimates fewer (they are noise themselves).
MANTISSA_BITS = {"diffuse_reference": 7, "specular_reference": 7, "diffuse_std": 3, "specular_std": 3}
DEFAULT_BITS = 5
_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6}]


def round_mantissa(bits: np.ndarray, keep: int) -> np.ndarray:
    """fp16 bit patterns (uint16) rounded to nearest, ties to even, with ``keep`` mantissa bits (unbiased:
    no systematic brightening); inf/NaN untouched, and a value that would round up to infinity is truncated
    instead."""
    drop = 10 - keep
    if drop <= 0:
        return bits
    mask = np.uint16((0xFFFF << drop) & 0xFFFF)
    wide = bits.astype(np.uint32)
    rounded = ((wide + (1 << (drop - 1)) - 1 + ((wide >> drop) & 1)) & mask).astype(np.uint16)
    special = (bits & 0x7C00) == 0x7C00
    overflow = ((rounded & 0x7C00) == 0x7C00) & ~special
    return np.where(special, bits, np.where(overflow, bits & mask, rounded))


def encode_shard(array: np.ndarray, channels: list[tuple[str, int]], lossless: bool) -> bytes:
    bits = np.ascontiguousarray(array, dtype=np.float16).view(np.uint16).copy()
    if not lossless:
        start = 0
        for name, count in channels:
            keep = MANTISSA_BITS.get(name, DEFAULT_BITS)
            bits[:, start:start + count] = round_mantissa(bits[:, start:start + count], keep)
            start += count
    pairs = bits.reshape(-1).view(np.uint8).reshape(-1, 2)
    return lzma.compress(np.concatenate([pairs[:, 1], pairs[:, 0]]).tobytes(), format=lzma.FORMAT_XZ,
                         filters=_FILTERS)


def decode_shard(payload: bytes, shape: list[int]) -> np.ndarray:
    shuffled = np.frombuffer(lzma.decompress(payload), np.uint8)
    half = shuffled.size // 2
    pairs = np.stack([shuffled[half:], shuffled[:half]], axis=1)
    return pairs.reshape(-1).view(np.float16).reshape(shape)


def _view_groups(index: dict) -> list[list[dict]]:
    """The index's shards grouped by the views they hold (whole-view shards: one group per view)."""
    groups: dict[tuple, list[dict]] = {}
    for shard in index["shards"]:
        views = tuple(sorted({item["view"] for item in shard["items"]}))
        groups.setdefault(views, []).append(shard)
    return list(groups.values())


def bundled_views(bundles: list[Path]) -> dict[str, set[str]]:
    """Folder name -> the views these bundles hold of it."""
    views: dict[str, set[str]] = {}
    for path in bundles:
        try:
            with zipfile.ZipFile(path) as bundle:
                for member in bundle.namelist():
                    if member.endswith("/index.json"):
                        index = json.loads(bundle.read(member))
                        views.setdefault(str(Path(member).parent), set()).update(index["packed_views"])
        except (KeyError, json.JSONDecodeError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path}: not a readable shard bundle ({type(error).__name__}: {error})"
                             ) from None
    return views


def write_bundle(out: Path, whole: list[Path], fill: list[Path], max_mb: float | None = None,
                 seed: int = 0, lossless: bool = False, progress=None, after: list[Path] = ()) -> dict:
    """Write the bundle atomically; returns how many shards and views of each folder went in. Views that
    the ``after`` bundles hold of a ``fill`` folder of the same name are left out."""
    out = Path(out)
    taken = bundled_views(list(after))
    names = [Path(folder).name for folder in [*whole, *fill]]
    if len(set(names)) != len(names):
        raise ValueError(f"bundled folders need distinct names, got {names}")
    if max_mb is not None and max_mb <= 0:
        raise ValueError(f"--max-mb must be positive, got {max_mb}")
    budget = max_mb * 1e6 if max_mb is not None else float("inf")
    stats, size = {}, 0
    temp = out.with_name(out.name + ".part")
    try:
        with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_STORED) as bundle:
            for folder, fill_folder in [(f, False) for f in whole] + [(f, True) for f in fill]:
                folder = Path(folder)
                index_path = folder / "index.json"
                if not index_path.is_file():
                    raise ValueError(f"not a packed-shard folder (no index.json): {folder}")
                index = json.loads(index_path.read_text())
                size += len(index_path.read_bytes()) + 4096  # its index (at most this) and zip headers
                channels = [tuple(c) for c in index["channels"]]
                groups = _view_groups(index)
                if fill_folder:
                    random.Random(seed).shuffle(groups)
                    earlier = taken.get(folder.name, set())
                    groups = [g for g in groups if not {i["view"] for s in g for i in s["items"]} & earlier]
                kept, shapes = [], {}
                for group in groups:
                    encoded = []
                    for shard in group:
                        array = np.load(folder / shard["file"])
                        encoded.append((shard, encode_shard(array, channels, lossless), list(array.shape)))
                    group_bytes = sum(len(payload) for _, payload, _ in encoded)
                    if fill_folder and size + group_bytes > budget:
                        break
                    if not fill_folder and size + group_bytes > budget:
                        raise ValueError(f"--whole {folder} does not fit in --max-mb {max_mb} "
                                         f"(with what was bundled before it)")
                    for shard, payload, shape in encoded:
                        size += 128  # the member's zip headers
                        bundle.writestr(f"{folder.name}/{shard['file']}.xz", payload)
                        shapes[shard["file"]] = shape
                        kept.append(shard)
                    size += group_bytes
                    if progress:
                        progress(folder.name, len(kept), size)
                views = sorted({item["view"] for shard in kept for item in shard["items"]})
                subset = {**index, "shards": kept, "packed_views": views,
                          "bundle": {"lossless": lossless, "shapes": shapes,
                                     "mantissa_bits": None if lossless else
                                     {name: MANTISSA_BITS.get(name, DEFAULT_BITS) for name, _ in channels}}}
                bundle.writestr(f"{folder.name}/index.json", json.dumps(subset))
                stats[folder.name] = {"shards": len(kept), "views": len(views)}
        os.replace(temp, out)
    finally:
        temp.unlink(missing_ok=True)
    stats["bytes"] = out.stat().st_size
    return stats


def _inside(root: Path, name: str) -> Path:
    """``root / name`` for a plain relative name that stays inside ``root`` (a bundle is data from
    elsewhere: no absolute paths, no ``..``)."""
    target = (root / name).resolve()
    if Path(name).is_absolute() or ".." in Path(name).parts or not target.is_relative_to(root.resolve()):
        raise ValueError(f"bundle member {name!r} points outside the output folder")
    return target


# index fields that must agree for two bundles' parts of a folder to be one folder
_SAME_FOLDER = ("version", "channels", "patch", "denoise_residual", "demodulate_specular", "separate_volume")


def _merged_index(folder: Path, index: dict) -> tuple[dict, int]:
    """``index`` joined with what an earlier bundle unpacked into ``folder`` (its other views; the same
    part unpacked again adds nothing), and how many of its shards the folder did not hold yet. A folder of
    another kind, or shards of the same name holding other views, is an error: they come from different
    packed folders."""
    path = folder / "index.json"
    if not path.is_file():
        return index, len(index["shards"])
    earlier = json.loads(path.read_text())
    differing = [key for key in _SAME_FOLDER if earlier.get(key) != index.get(key)]
    if "bundle" not in earlier or differing:
        why = f"its {', '.join(differing)} differ" if differing else "it was not unpacked from a bundle"
        raise ValueError(f"{folder} already holds other shards ({why}); unpack into another --out")
    shards = {shard["file"]: shard for shard in earlier["shards"]}
    for shard in index["shards"]:
        if shard["file"] in shards and shard["items"] != shards[shard["file"]]["items"]:
            raise ValueError(f"{folder}: {shard['file']} of another packed folder is already there; "
                             "unpack into another --out")
        shards[shard["file"]] = shard
    shapes = {**earlier["bundle"]["shapes"], **index["bundle"]["shapes"]}
    views = sorted(set(earlier["packed_views"]) | set(index["packed_views"]))
    # lossless only if every part was; a lossy part's rounding is the folder's (the same channels give
    # the same bits in every lossy part)
    parts = (earlier["bundle"], index["bundle"])
    lossless = all(part["lossless"] for part in parts)
    bits = None if lossless else next(part["mantissa_bits"] for part in parts if not part["lossless"])
    merged = {**index, "shards": list(shards.values()), "packed_views": views,
              "bundle": {"lossless": lossless, "shapes": shapes, "mantissa_bits": bits}}
    return merged, len(shards) - len(earlier["shards"])


def extract_bundle(bundle_path: Path, out: Path) -> dict:
    """Unpack every folder of the bundle under ``out``, joining a folder that an earlier bundle's part of
    the same packed folder was unpacked into (``--after``). Shards are written through temporary files,
    and a folder's index.json is replaced last, so an interrupted or failed unpack never leaves an index
    naming a missing or partial shard. Damaged bundles raise ValueError."""
    out = Path(out)
    stats = {}
    try:
        with zipfile.ZipFile(bundle_path) as bundle:
            indexes = [name for name in bundle.namelist() if name.endswith("/index.json")]
            if not indexes:
                raise ValueError(f"{bundle_path}: not a shard bundle (no index.json inside)")
            for member in indexes:
                folder_name = str(Path(member).parent)
                folder = _inside(out, folder_name)
                folder.mkdir(parents=True, exist_ok=True)
                index = json.loads(bundle.read(member))
                merged, added = _merged_index(folder, index)
                shapes = index["bundle"]["shapes"]
                for shard in index["shards"]:
                    if Path(shard["file"]).name != shard["file"]:
                        raise ValueError(f"bundle shard name {shard['file']!r} is not a plain file name")
                    array = decode_shard(bundle.read(f"{folder_name}/{shard['file']}.xz"),
                                         shapes[shard["file"]])
                    save_atomic(_inside(folder, shard["file"]), lambda f, a=array: np.save(f, a))
                save_atomic(folder / "index.json", lambda f, i=merged: f.write(json.dumps(i).encode()))
                stats[folder.name] = added
    except (KeyError, lzma.LZMAError, json.JSONDecodeError, zipfile.BadZipFile) as error:
        raise ValueError(f"{bundle_path}: damaged bundle ({type(error).__name__}: {error})") from None
    return stats

