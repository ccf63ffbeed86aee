"""Manifest statistics (markdown) and a contact sheet of reference renders for docs/data.md."""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from training.datagen import plan
from training.datagen.exr_io import read_passes
from training.datagen.preview import contact_sheet, write_png


def manifest_table(records: list[dict]) -> str:
    by_split: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_split[record["split"]].append(record)
    lines = ["| split | views | resolution | noisy spp | reference spp | render hours | median s/view "
             "| kinds |",
             "|---|---|---|---|---|---|---|---|"]
    for split, group in sorted(by_split.items()):
        kinds = Counter(r["kind"] for r in group)
        seconds = [sum(x["render_seconds"] or 0 for x in r["renders"]) for r in group]
        walls = [r["wall_seconds"] for r in group]
        sizes = ", ".join(sorted({"x".join(map(str, r["resolution"])) for r in group}))
        lines.append(
            f"| {split} | {len(group)} | {sizes}"
            f" | {', '.join(sorted({' '.join(map(str, r['spp'])) for r in group}))}"
            f" | {', '.join(sorted({str(r['ref_spp']) for r in group}))}"
            f" | {sum(seconds) / 3600:.2f} | {np.median(walls):.0f}"
            f" | {', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))} |")
    return "\n".join(lines) + "\n"


def spp_seconds_table(records: list[dict]) -> str:
    """Mean render seconds per image by (split, samples)."""
    times: dict[tuple[str, int], list[float]] = defaultdict(list)
    for record in records:
        for render in record["renders"]:
            if render["render_seconds"] is not None:
                times[(record["split"], render["samples"])].append(render["render_seconds"])
    lines = ["| split | samples per image | images | median seconds | mean seconds |",
             "|---|---|---|---|---|"]
    for (split, samples), values in sorted(times.items()):
        lines.append(f"| {split} | {samples} | {len(values)} | {np.median(values):.1f} "
                     f"| {np.mean(values):.1f} |")
    return "\n".join(lines) + "\n"


def bytes_per_item(out_root: Path) -> dict:
    """Disk use: EXRs per view, packed bytes per stored patch."""
    result = {}
    views = [p for p in (out_root / "renders").glob("*/*") if p.is_dir()]
    if views:
        result["exr_bytes_per_view"] = int(np.mean([sum(f.stat().st_size for f in v.glob("*.exr"))
                                                    for v in views]))
    for index_path in sorted((out_root / "packed").glob("*/index.json")):
        index = json.loads(index_path.read_text())
        count = sum(s["count"] for s in index["shards"])
        size = sum((index_path.parent / s["file"]).stat().st_size for s in index["shards"])
        if count:
            result[f"{index_path.parent.name}_bytes_per_patch"] = size // count
            result[f"{index_path.parent.name}_patches"] = count
    return result


def write_summary(out_root: Path, docs: Path, max_sheet: int = 48) -> dict:
    records = plan.read_manifest(out_root)
    if not records:
        raise SystemExit(f"error: no manifest records under {out_root}")
    docs.mkdir(parents=True, exist_ok=True)
    picked = [r for r in records if r["split"] == "val"] + [r for r in records if r["split"] != "val"]
    images = [read_passes(str(out_root / r["dir"] / "reference.exr"))["combined"]
              for r in picked[:max_sheet]]
    write_png(str(docs / "data_contact_sheet.png"), contact_sheet(images, columns=8, tile=128))
    summary = {"markdown": manifest_table(records) + "\n" + spp_seconds_table(records),
               "sizes": bytes_per_item(out_root), "views": len(records)}
    (out_root / "summary.json").write_text(json.dumps(summary, indent=1))
    update_data_md(docs / "data.md", summary)
    return summary


def update_data_md(path: Path, summary: dict) -> None:
    """Replace the block between the manifest-summary markers in docs/data.md (if present)."""
    start, end = "<!-- manifest-summary -->\n", "<!-- /manifest-summary -->"
    if not path.exists():
        return
    text = path.read_text()
    if start not in text or end not in text:
        return
    sizes = ", ".join(f"{k} {v}" for k, v in summary["sizes"].items())
    block = f"{summary['markdown']}\nSizes: {sizes}. Written {time.strftime('%Y-%m-%d %H:%M')}.\n"
    head, rest = text.split(start, 1)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(head + start + block + end + rest.split(end, 1)[1])
    os.replace(tmp, path)
