"""Render planned items with a pool of bpy subprocesses; record finished items in a JSONL manifest.

Resume: items already in any ``manifest*.jsonl`` under the output root are skipped, and inside an
unfinished item every EXR already on disk is kept (EXRs are written atomically by render.py).
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from training.datagen import launch, plan
from training.datagen.exr_io import read_passes
from training.datagen.quality import firefly_stats

log = logging.getLogger("datagen")


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def render_item(item: dict, out_root: Path, settings: plan.Settings, python: str | None) -> dict:
    job = plan.build_job(item, out_root, settings.threads, settings.max_bounces)
    item_dir = Path(job["renders"][0]["out"]).parent
    item_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*item_dir.glob("*.job.json"), *item_dir.glob("*.partial*")]:  # left by a killed run
        stale.unlink()
    if "scene" in job:  # the exact spec, so the view stays reproducible even if the generator changes
        atomic_write_text(item_dir / "scene.json", json.dumps(job["scene"], indent=1))
    start = time.perf_counter()
    results = launch.run_job(job, python=python, log_path=item_dir / "blender.log")
    wall = time.perf_counter() - start
    seconds = {Path(r["out"]).name: r["render_seconds"] for r in results}
    ref = read_passes(job["renders"][-1]["out"])
    record = {key: item[key] for key in item if key not in ("index",)}
    record.update(
        kind=job.get("scene", {}).get("kind", item.get("kind", "blend")),
        dir=str(item_dir.relative_to(out_root)),
        renders=[{"file": Path(r["out"]).name, "name": r["name"], "samples": r["samples"],
                  "seed": r["seed"], "render_seconds": seconds.get(Path(r["out"]).name)}
                 for r in job["renders"]],
        wall_seconds=round(wall, 2),
        fireflies=firefly_stats(ref["combined"][..., :3]),
        finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    if results:
        record["blender"] = results[0]["blender"]
    return record


def run(settings: plan.Settings, out_root: Path, jobs: int = 1, shard: tuple[int, int] = (0, 1),
        python: str | None = None, progress: bool = True) -> list[dict]:
    """Render every unfinished item of this shard; returns the manifest records written now."""
    out_root.mkdir(parents=True, exist_ok=True)
    items = plan.shard_filter(plan.plan_items(settings), shard)
    done = {record["id"] for record in plan.read_manifest(out_root)}
    todo = [item for item in items if item["id"] not in done]
    name = "manifest.jsonl" if shard == (0, 1) else f"manifest.shard{shard[0]}of{shard[1]}.jsonl"
    manifest = out_root / name
    log.info("%s: %d items in shard %d/%d, %d already done, %d to render", settings.split, len(items),
             shard[0], shard[1], len(items) - len(todo), len(todo))
    written = []
    with ThreadPoolExecutor(max_workers=jobs) as pool, \
            tqdm(total=len(todo), disable=not progress, unit="view", desc=settings.split) as bar:
        futures = {pool.submit(render_item, item, out_root, settings, python): item for item in todo}
        for future in as_completed(futures):
            item = futures[future]
            try:
                record = future.result()
            except Exception as error:  # one failed scene must not stop a long run
                log.error("%s failed: %s", item["id"], error)
                bar.update(1)
                continue
            plan.append_manifest(manifest, record)
            written.append(record)
            ff = record["fireflies"]
            log.info("%s %s done in %.1fs (fireflies %d, non-finite %d)", record["id"], record["kind"],
                     record["wall_seconds"], ff["count"], ff["nonfinite"])
            bar.update(1)
    return written
