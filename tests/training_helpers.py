"""Shared helpers of the training/export tests: tiny configs of every architecture."""

from __future__ import annotations

from pathlib import Path

import torch

from training.checkpoint import RunFolder, write_json
from training.config import Config, load_config
from training.graph import build_graph

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "training" / "configs"
TINY = CONFIGS / "tiny.yaml"
# one config per registered architecture type, plus the preset variants that change the graph
TRAINED_ARCHS = ["kpcn", "kprcn", "kprcan", "direct_cnn", "direct_rcn", "direct_rcan", "fast"]
ALL_CONFIGS = TRAINED_ARCHS + ["kprcan_4block", "kprcan_global", "ablation_kpcn_batchnorm"]


def tiny_config(name: str, overrides: list[str] | None = None) -> Config:
    return load_config([CONFIGS / f"{name}.yaml", TINY], overrides)


def untrained_run(config: Config, run_dir: Path, seed: int = 0) -> RunFolder:
    """A run folder holding freshly initialised weights (for export tests that need no training)."""
    torch.manual_seed(seed)
    graph = build_graph(config)
    run = RunFolder(run_dir)
    write_json(run.config_path, config.to_dict())
    run.save("latest", graph, {"step": 0, "stage": 0, "optimizer": {}, "scheduler": {}, "skipped": 0,
                               "best_psnr": float("-inf"), "world_size": 1})
    return run


def graphs_from_plain_weights(overrides: list[str], folder: Path):
    """The tiny ``fast`` graph and the one ``overrides`` make of it, both in eval mode and loaded with the
    first one's (untrained) weights: the second widens what it loads."""
    from training.checkpoint import load_weights

    plain_config = tiny_config("fast")
    plain = untrained_run(plain_config, folder / "plain")
    graphs = []
    for config in (plain_config, tiny_config("fast", overrides)):
        graph = build_graph(config).eval()
        load_weights(plain.weights_path("latest"), graph)
        graphs.append(graph)
    return tuple(graphs)


def pack_one_view(rendered: Path, work: Path, variants: list[dict]) -> dict:
    """The first view of a datagen output folder ``rendered``, copied into ``work`` and packed whole once
    per keyword set of ``pack_split`` in ``variants`` (fireflies allowed); returns its manifest record."""
    import json
    import shutil

    from training.datagen import pack, plan

    record = plan.read_manifest(rendered)[0]
    shutil.copytree(rendered / record["dir"], work / record["dir"])
    (work / "manifest.jsonl").write_text(json.dumps(record) + "\n")
    for flags in variants:
        pack.pack_split(work, "train", full=True, max_firefly_fraction=1.0, **flags)
    return record
