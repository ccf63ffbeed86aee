"""What to render: views (items) with their renders, seeds, output files; sharding; the manifest.

An *item* is one view: a scene (procedural spec or user .blend + variation) rendered as
``len(spp)`` noisy levels, each as two independent half-sample images (``spp{n}_a.exr``/``spp{n}_b.exr``,
n/2 samples each, different Cycles seeds), plus one reference ``reference.exr`` (the layout
training/evaluate.py reads). All seeds derive from the item's scene seed, so an item is fully
reproducible from its manifest line.

Training and validation scene seeds come from disjoint ranges, so no validation scene is ever trained on.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from training.datagen.scene_kinds import make_scene

SPLIT_SEED_BASE = {"train": 0, "val": 1_000_000_000, "test": 2_000_000_000}
SEED_RANGE = 1_000_000_000


@dataclass
class Settings:
    split: str = "train"
    views: int = 300
    resolution: tuple[int, int] = (128, 128)
    spp: tuple[int, ...] = (4, 16, 64)
    ref_spp: int = 512
    first: int = 0            # index of the first view (scene seed = split base + first + i)
    threads: int = 2
    max_bounces: int = 12
    blends: list[str] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    kinds: tuple[str, ...] = ()  # procedural kinds in turn (view i gets kinds[i % len]); empty: drawn by seed


def render_seeds(scene_seed: int, spp: tuple[int, ...]) -> dict[str, int]:
    """Distinct Cycles seeds for every image of an item (halves and reference never share one)."""
    rng = random.Random(scene_seed * 7919 + 17)
    names = [f"spp{n}_{h}" for n in spp for h in "ab"] + ["ref"]
    seeds = rng.sample(range(1, 2**30), len(names))
    return dict(zip(names, seeds, strict=True))


def item_renders(item: dict, item_dir: Path) -> list[dict]:
    seeds = render_seeds(item["scene_seed"], tuple(item["spp"]))
    renders = []
    for n in item["spp"]:
        if n % 2:
            raise ValueError(f"sample counts must be even (two halves): {n}")
        renders += [{"name": f"spp{n}_{h}", "samples": n // 2, "seed": seeds[f"spp{n}_{h}"],
                     "out": str(item_dir / f"spp{n}_{h}.exr")} for h in "ab"]
    renders.append({"name": "ref", "samples": item["ref_spp"], "seed": seeds["ref"],
                    "out": str(item_dir / "reference.exr")})
    return renders


def plan_items(settings: Settings) -> list[dict]:
    """All items of a run, in order. Procedural unless ``settings.blends`` is given."""
    base = SPLIT_SEED_BASE[settings.split]
    items = []
    for i in range(settings.first, settings.first + settings.views):
        item = {"id": f"{settings.split}-{i:06d}", "split": settings.split, "index": i,
                "resolution": list(settings.resolution), "spp": list(settings.spp),
                "ref_spp": settings.ref_spp}
        if settings.blends:
            rng = random.Random(base + i)
            blend = settings.blends[i % len(settings.blends)]
            item.update(scene_seed=base + i, blend=os.path.abspath(blend), kind="blend",
                        frame=rng.choice(settings.frames) if settings.frames else None,
                        camera_jitter={"offset": [round(rng.uniform(-0.1, 0.1), 4) for _ in range(3)],
                                       "rotation": [round(rng.uniform(-0.03, 0.03), 4) for _ in range(3)],
                                       "lens_scale": round(rng.uniform(0.9, 1.1), 4)})
        else:
            item.update(scene_seed=base + i)
            if settings.kinds:
                item["kind"] = settings.kinds[i % len(settings.kinds)]
        items.append(item)
    return items


def shard_filter(items: list[dict], shard: tuple[int, int]) -> list[dict]:
    """Items of shard ``i`` of ``n`` (by index modulo n): shards never overlap and cover everything."""
    i, n = shard
    if not 0 <= i < n:
        raise ValueError(f"bad shard {i}/{n}")
    return [item for item in items if item["index"] % n == i]


def build_job(item: dict, out_root: Path, threads: int, max_bounces: int = 12) -> dict:
    item_dir = out_root / "renders" / item["split"] / item["id"]
    job = {"threads": threads, "max_bounces": max_bounces, "renders": item_renders(item, item_dir)}
    if "blend" in item:
        job.update(blend=item["blend"], camera_jitter=item["camera_jitter"], resolution=item["resolution"])
        if item.get("frame") is not None:
            job["frame"] = item["frame"]
    else:
        job["scene"] = make_scene(item["scene_seed"], tuple(item["resolution"]), item.get("kind"))
    return job


def manifest_paths(out_root: Path) -> list[Path]:
    return sorted(out_root.glob("manifest*.jsonl"))


def read_manifest(out_root: Path) -> list[dict]:
    """All finished items of every shard's manifest; a torn last line (killed writer) is ignored."""
    records = []
    for path in manifest_paths(out_root):
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def append_manifest(path: Path, record: dict) -> None:
    """Append one finished item as a single line (flushed and fsynced before returning)."""
    line = json.dumps(record, sort_keys=True) + "\n"
    with open(path, "a") as f:
        if f.tell() > 0:
            # a previous run killed mid-line leaves no trailing newline: start on a fresh line
            with open(path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    f.write("\n")
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
