#!/usr/bin/env python
"""Structured channel pruning of a trained denoiser: remove a fraction of the channels, fine-tune,
validate, and repeat until a FLOPs target or a quality floor.

    python -m training.prune --init models/fast.safetensors --prune-config training/configs/prune/fast.yaml
                             [--config X.yaml ...] [--set prune.criterion=taylor --set data.batch_size=4]
                             [--run-dir runs/NAME]
    python -m training.prune --run-dir runs/NAME [--set prune.max_steps=12]      # resume or extend
    python -m training.export runs/NAME -o models/NAME.onnx                       # the last accepted step

The model's training config comes from ``--config`` files or, as for ``train.py --init``, from the
``.json`` beside the ``--init`` weights. ``--prune-config`` holds a ``prune:`` section (``PruneSettings``)
and a ``finetune:`` overlay merged onto that config for every fine-tune (any config key: optimizer,
schedule, stages, data, train). ``--set`` takes ``prune.*`` keys and config keys alike.

What is removed: whole output channels of convolutions, with everything that writes or reads the same
channel: the batch norm after a convolution, the input slices of the convolutions that read it, every
convolution whose output is summed into the same channel by a skip (a U-Net level's encoder and the
projection added to it; the whole residual trunk of KPRCN and KPRCAN) and the channel attention's reduce
(input) and expand (output) weights. torch-pruning's dependency graph (Fang et al. 2023, "DepGraph:
towards any structural pruning") finds these coupled groups by tracing the autograd graph of one forward
pass of the whole ``DenoiserGraph``. It serves every registered architecture as it is: skip sums and the
attention's product are element-wise ops to it, pooling and upsampling keep channels, and the only
concatenations are of the inputs, which no layer produces; no block needed handling of its own. The
layers that write a network's outputs (the kernel logits, k*k channels per component; the U-Net's blend
weights; a direct network's colour) are never pruned, nor the input channels.

Importance (``prune.criterion``), per channel of a coupled group, computed by torch-pruning:

* ``l1``: L1 norm of the channel's convolution weights, averaged over the group's convolutions (the
  filters writing the channel and the slices reading it: Li et al. 2017, "Pruning filters for efficient
  ConvNets", over coupled groups);
* ``bn_scale``: |gamma| of the group's batch norms (Liu et al. 2017, "Network slimming"); a group without
  batch norm (channel attention's hidden layer) is ranked by ``l1``; a network without any is refused;
* ``taylor``: the first-order Taylor estimate of the loss change when the channel goes, |w * dL/dw| summed
  over the group's convolution weights, with the training loss's gradients accumulated over
  ``taylor_batches`` training batches (Molchanov et al. 2019, "Importance estimation for neural network
  pruning").

Each step removes, in every group, ``fraction`` of its channels (rounded), the least important first,
keeping at least ``min_channels``. With ``round_to`` > 1 a group keeps a multiple of it (rounded down,
so 32 channels at a fraction of 0.125 and ``round_to`` 16 keep 16), and a group of ``round_to`` channels or
fewer is left alone: onnxruntime's blocked (NCHWc) CPU convolutions pad a
convolution's outputs to a multiple of the block (8 channels with AVX2, 16 with AVX-512) and run a
convolution whose input channels are not a multiple of it in the slower plain layout.

The loop: step 0 validates and measures the unpruned model; each step k prunes step k-1's model,
fine-tunes it ``finetune_steps`` steps with ``train.train`` (the config's optimizer, schedule, stages and
loss, train.py's resume), validates it (``train.validate``) and measures it. A step whose validation PSNR
is more than ``max_psnr_drop`` dB below step 0's is rejected and ends the run (the model stays at the step
before). The run also ends at ``max_steps``, when the FLOPs reach ``target_flops`` times step 0's, or
when no group can lose a channel.

Run folder (default ``runs/<config name>``; the config's name gets ``_pruned`` unless a name is given):

* ``prune.json``: the run's complete settings: ``prune``, the training ``config`` it started from (with
  the fine-tune overlay and the overrides) and the ``init`` weights;
* ``config.json`` and ``checkpoints/latest.safetensors``: the last accepted step's model, its per-layer
  channel counts in ``model.channels`` (``graph.set_layer_channels``): ``training.export`` exports it
  like any run;
* ``steps/step_NNN.safetensors`` (weights), ``.json`` (its config: ``train.py --init`` takes the
  weights) and ``.onnx`` (exported, metadata included) for every step, ``step_NNN_removed.json`` (the
  channels each layer lost), and ``step_NNN_finetune/``, the step's fine-tune (a train.py run folder;
  its checkpoints are deleted once the step is complete);
* ``metrics.jsonl``: one line per step: ``gflop_per_megapixel`` (``archs.summary``'s count) and
  ``flops_ratio`` to step 0, ``parameters``, ``channels`` (output channels of the prunable convolutions)
  and ``removed_channels``, the validation scores of train.py (``psnr``, ``noisy_psnr``, ``l1``,
  ``relmse``), ``psnr_drop`` below step 0, ``cpu_s_per_1080p_frame``, ``finetune_loss`` (mean of the
  fine-tune's last tenth of steps), ``accepted``.

``cpu_s_per_1080p_frame`` is the median wall time of ``timing_runs`` runs of the step's ONNX model by
onnxruntime on the CPU (the inference core's session options) over one whole ``timing_size`` frame (sides
rounded up to the size multiple), after one warm-up run. It is recorded as measured: it means something
only on an otherwise idle machine.

An interrupted run resumes from its last complete step (an interrupted fine-tune from its own latest
checkpoint); a finished one goes on when ``--set`` raises ``max_steps`` or lowers ``target_flops``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from training.archs.blocks import DifferencesConv2d
from training.archs.summary import flops_per_megapixel, parameter_count
from training.checkpoint import RunFolder, atomic_write, load_weights, save_weights, write_json
from training.config import (
    Config,
    apply_override,
    config_from_dict,
    load_config,
    load_config_json,
    merge,
    read_yaml,
)
from training.data import batch_stream, build_datasets
from training.export import export_onnx
from training.graph import DenoiserGraph, build_graph, example_inputs
from training.losses import DenoiseLoss, stage_loss
from training.train import append_metrics, setup_distributed, train, validate, with_train

CRITERIA = ("l1", "bn_scale", "taylor")


@dataclass
class PruneSettings:
    criterion: str = "l1"           # l1 | bn_scale | taylor (see the module docstring)
    fraction: float = 0.1           # share of each group's channels removed per step
    min_channels: int = 4           # no group goes below this
    round_to: int = 1               # keep multiples of this (onnxruntime's channel blocks)
    finetune_steps: int = 500       # training steps after each pruning
    taylor_batches: int = 8         # training batches whose gradients rank channels (criterion taylor)
    target_flops: float = 0.5       # stop once FLOPs are at most this share of the unpruned model's
    max_psnr_drop: float | None = 0.1   # dB below the unpruned validation PSNR rejecting a step (null: off)
    max_steps: int = 10
    timing_runs: int = 3            # onnxruntime runs timed per step (0: no timing)
    timing_size: list[int] = field(default_factory=lambda: [1920, 1080])   # width, height

    def checked(self) -> PruneSettings:
        checks = [
            (self.criterion in CRITERIA, f"prune.criterion must be one of {', '.join(CRITERIA)}"),
            (0 < self.fraction < 1, "prune.fraction must be in (0, 1)"),
            (self.min_channels >= 1 and self.round_to >= 1, "prune.min_channels and round_to must be >= 1"),
            (self.finetune_steps >= 0 and self.taylor_batches >= 1, "prune.finetune_steps >= 0, "
                                                                   "taylor_batches >= 1"),
            (0 < self.target_flops <= 1, "prune.target_flops must be in (0, 1]"),
            (self.max_psnr_drop is None or self.max_psnr_drop >= 0, "prune.max_psnr_drop: >= 0 or null"),
            (self.max_steps >= 0 and self.timing_runs >= 0, "prune.max_steps and timing_runs must be >= 0"),
            (len(self.timing_size) == 2 and min(self.timing_size) > 0, "prune.timing_size: [width, height]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self


def settings_from_dict(raw: dict) -> PruneSettings:
    known = {f.name for f in dataclasses.fields(PruneSettings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown prune key {unknown[0]}; known: {', '.join(sorted(known))}")
    return PruneSettings(**raw).checked()


# --- the pruning itself ------------------------------------------------------------------------------

def output_layers(network: nn.Module) -> list[nn.Module]:
    """The convolutions that write a component network's outputs: never pruned."""
    if not hasattr(network, "output_layers"):
        raise ValueError(f"prune: no output layers known for {type(network).__name__}")
    return network.output_layers()


def layer_channels(graph: DenoiserGraph) -> dict[str, list[int]]:
    """[in, out] channels of every convolution and batch norm: a pruned config's ``model.channels``."""
    table = {}
    for name, module in graph.named_modules():
        if isinstance(module, nn.Conv2d):
            table[name] = [module.in_channels, module.out_channels]
        elif isinstance(module, nn.BatchNorm2d):
            table[name] = [module.num_features, module.num_features]
    return table


def prunable_channels(graph: DenoiserGraph) -> int:
    outputs = {id(layer) for net in graph.nets.values() for layer in output_layers(net)}
    return sum(m.out_channels for m in graph.modules() if isinstance(m, nn.Conv2d) and id(m) not in outputs)


def channels_to_keep(count: int, settings: PruneSettings) -> int:
    keep = count - int(count * settings.fraction + 0.5)
    if settings.round_to > 1:
        if count <= settings.round_to:
            return count
        keep = max(settings.round_to, keep - keep % settings.round_to)
    return max(keep, min(settings.min_channels, count))


def importance_of(criterion: str, graph: nn.Module):
    """torch-pruning's estimator for ``criterion``: group -> one score per channel (higher: keep)."""
    import torch_pruning as tp

    convolutions = [nn.modules.conv._ConvNd]
    l1 = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean", normalizer=None,
                                                target_types=convolutions)
    if criterion == "l1":
        return l1
    if criterion == "taylor":
        return tp.importance.GroupTaylorImportance(group_reduction="mean", normalizer=None,
                                                   target_types=convolutions)
    if not any(isinstance(m, nn.BatchNorm2d) for m in graph.modules()):
        raise ValueError("prune.criterion bn_scale needs a model with batch norm (model.norm: batch)")
    scale = tp.importance.BNScaleImportance(normalizer=None)

    def bn_scale(group):
        scores = scale(group)
        return l1(group) if scores is None else scores
    return bn_scale


def accumulate_gradients(graph: DenoiserGraph, train_set, config: Config, batches: int,
                         device: torch.device) -> None:
    """Gradients of the first stage's training loss, summed over ``batches`` training batches, in the
    weights' ``.grad`` (the taylor criterion reads them). Eval mode: the network as it will run, and
    BatchNorm's running statistics stay as they are."""
    graph.eval().zero_grad(set_to_none=True)
    loss_fn = DenoiseLoss(config.loss)
    stream = batch_stream(train_set, config, 0, 1, 0, device)
    try:
        for _ in range(batches):
            batch = {k: v.to(device).float() for k, v in next(stream).items()}
            loss = stage_loss(loss_fn, graph, graph.denoise(batch), batch, config.stages[0].target)
            if torch.isfinite(loss):  # a corrupt batch would rank every channel by NaN
                loss.backward()
    finally:
        stream.close()


def prune_graph(graph: DenoiserGraph, settings: PruneSettings, importance) -> list[dict]:
    """Remove, in every coupled group of ``graph``, its least important channels (``channels_to_keep``).
    Returns what went: per group its root convolution and every layer it touched, with the dimension
    ('out': output channels, 'in': input channels) and the indices removed there."""
    import torch_pruning as tp

    names = {module: name for name, module in graph.named_modules()}
    outputs = [layer for net in graph.nets.values() for layer in output_layers(net)]
    multiple = graph.size_multiple
    example = {k: v.to(next(graph.parameters()).device)
               for k, v in example_inputs(graph, 4 * multiple, 4 * multiple).items()}
    with torch.enable_grad(), DifferencesConv2d.constant_fold():
        dependencies = tp.DependencyGraph().build_dependency(graph, example_inputs=example, verbose=False)
    plans = []  # every score before any pruning: scores read weights (and gradients) the pruning changes
    for group in dependencies.get_all_groups(ignored_layers=outputs, root_module_types=[nn.Conv2d]):
        root = group[0].dep.target.module
        keep = channels_to_keep(root.out_channels, settings)
        if keep < root.out_channels:
            order = torch.argsort(importance(group).cpu(), stable=True)
            plans.append((root, sorted(order[:root.out_channels - keep].tolist())))
    removed = []
    for root, indices in plans:
        group = dependencies.get_pruning_group(root, tp.prune_conv_out_channels, indices)
        if not dependencies.check_pruning_group(group):
            raise RuntimeError(f"prune: removing {len(indices)} channels of {names[root]} empties a layer")
        layers = [{"layer": names[dep.target.module], "type": _kind(dep.target.module),
                   "dim": "out" if dependencies.is_out_channel_pruning_fn(dep.handler) else "in",
                   "indices": sorted(int(i) for i in idxs)}
                  for dep, idxs in group if dep.target.module in names]
        removed.append({"group": names[root], "removed": len(indices), "layers": layers})
        group.prune()
    return removed


# --- measuring a step --------------------------------------------------------------------------------

def seconds_per_frame(onnx_path: Path, graph: DenoiserGraph, settings: PruneSettings) -> float | None:
    """Median wall seconds of onnxruntime (CPU, the core's session options) on one whole frame."""
    if settings.timing_runs == 0:
        return None
    from denoiser_core.devices import session_options
    from denoiser_core.models import open_session

    cpu = ["CPUExecutionProvider"]
    session = open_session(onnx_path, cpu, session_options(cpu))
    multiple = graph.size_multiple
    width, height = (-(-side // multiple) * multiple for side in settings.timing_size)
    feeds = {name: x.numpy() for name, x in example_inputs(graph, height, width).items()}
    session.run(None, feeds)  # warm-up: allocations and kernel choices
    times = []
    for _ in range(settings.timing_runs):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 4)


def _kind(module: nn.Module) -> str:
    """A layer's kind in ``prune_graph``'s record: a folded first convolution is a Conv2d too."""
    return "Conv2d" if isinstance(module, nn.Conv2d) else type(module).__name__


def removed_conv_channels(removed: list[dict]) -> int:
    """Output channels of convolutions that ``prune_graph``'s record says it removed."""
    return sum(len(layer["indices"]) for group in removed for layer in group["layers"]
               if layer["dim"] == "out" and layer["type"] == "Conv2d")


def write_removed(path: Path, removed: list[dict]) -> None:
    """``prune_graph``'s record, one line (fast's indices run to thousands)."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(removed) + "\n"))


def step_path(run_path: Path, step: int, suffix: str = ".safetensors") -> Path:
    return run_path / "steps" / f"step_{step:03d}{suffix}"


def record_step(run: RunFolder, step: int, graph: DenoiserGraph, config: Config, settings: PruneSettings,
                val_set, device: torch.device, removed: list[dict], rows: list[dict],
                finetune_loss: float | None, started: float) -> dict:
    """Validate and measure ``graph`` as step ``step``; write its checkpoint, config, ONNX model and
    metrics line. Returns the line."""
    scores = validate(graph.to(device), val_set, config, device)
    graph.cpu().eval()
    gflop = flops_per_megapixel(graph) / 1e9
    weights = step_path(run.path, step)
    save_weights(weights, graph, {"step": str(step)})
    write_json(weights.with_suffix(".json"), config.to_dict())
    write_removed(step_path(run.path, step, "_removed.json"), removed)
    onnx_path = weights.with_suffix(".onnx")
    export_onnx(graph, config, onnx_path, f"{config.name}_step{step}")
    base = rows[0] if rows else {"psnr": scores["psnr"], "gflop_per_megapixel": gflop}
    drop = base["psnr"] - scores["psnr"]
    accepted = step == 0 or settings.max_psnr_drop is None or drop <= settings.max_psnr_drop
    row = {
        "step": step, "criterion": settings.criterion if step else None,
        "gflop_per_megapixel": round(gflop, 4), "flops_ratio": round(gflop / base["gflop_per_megapixel"], 4),
        "parameters": parameter_count(graph), "channels": prunable_channels(graph),
        "removed_channels": removed_conv_channels(removed),
        **{key: round(value, 6) for key, value in scores.items()}, "psnr_drop": round(drop, 6),
        "cpu_s_per_1080p_frame": seconds_per_frame(onnx_path, graph, settings),
        "finetune_steps": settings.finetune_steps if step else 0, "finetune_loss": finetune_loss,
        "accepted": accepted, "seconds": round(time.perf_counter() - started, 1),
    }
    append_metrics(run.path / "metrics.jsonl", row)
    return row


def clean_step(run: RunFolder, step: int) -> None:
    """Remove what a complete step no longer needs: its pruned-but-not-fine-tuned weights and its
    fine-tune's checkpoints (train.py's optimiser state, pickled)."""
    pruned = step_path(run.path, step, "_pruned.safetensors")
    pruned.unlink(missing_ok=True)
    pruned.with_suffix(".json").unlink(missing_ok=True)
    shutil.rmtree(step_path(run.path, step, "_finetune") / "checkpoints", ignore_errors=True)


def publish(run: RunFolder, step: int) -> None:
    """Make ``step`` the run's model: config.json and checkpoints/latest (what training.export reads)."""
    weights = step_path(run.path, step)
    write_json(run.config_path, json.loads(weights.with_suffix(".json").read_text()))
    atomic_write(run.weights_path("latest"), lambda tmp: shutil.copyfile(weights, tmp))


# --- the run -------------------------------------------------------------------------------------------

def read_rows(run: RunFolder) -> list[dict]:
    """The metrics lines of the complete steps (a step's files are written before its line)."""
    path = run.path / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stop_reason(rows: list[dict], settings: PruneSettings) -> str | None:
    last = rows[-1]
    if not last["accepted"]:
        return (f"step {last['step']} lost {last['psnr_drop']:.3f} dB of validation PSNR "
                f"(prune.max_psnr_drop {settings.max_psnr_drop})")
    if last["flops_ratio"] <= settings.target_flops:
        return f"FLOPs at {last['flops_ratio']:.3f} of the unpruned model (prune.target_flops)"
    if last["step"] >= settings.max_steps:
        return f"prune.max_steps {settings.max_steps} reached"
    return None


def finetune_mean_loss(result: dict) -> float | None:
    losses = [loss for _step, _stage, loss in result["losses"]]
    tail = losses[-max(1, len(losses) // 10):]
    return round(sum(tail) / len(tail), 6) if tail else None


def run_pruning(run_dir: str | Path, train_set=None, val_set=None, progress: bool = True) -> dict:
    """Run (or resume) the prune run in ``run_dir`` (``prepare_run`` wrote its prune.json). Returns its
    metrics lines, why it stopped and the step it ended on. ``train_set``/``val_set`` replace the
    datasets ``data`` names (tests pass their own)."""
    run = RunFolder(run_dir)
    stored = json.loads((run.path / "prune.json").read_text())
    settings, config = settings_from_dict(stored["prune"]), config_from_dict(stored["config"])
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("prune runs in one process (no torchrun)")
    importance_of(settings.criterion, build_graph(config))  # a criterion the model cannot serve: now
    _rank, _world, device = setup_distributed(config.train.device)
    if config.train.threads > 0:
        torch.set_num_threads(config.train.threads)
    if train_set is None:
        train_set, val_set = build_datasets(config)
    if val_set is None:
        raise ValueError("pruning needs validation data (data.val): every step is judged on it")
    rows = read_rows(run)
    if not rows:
        graph = build_graph(config)
        load_weights(Path(stored["init"]), graph)
        rows.append(record_step(run, 0, graph, config, settings, val_set, device, [], rows, None,
                                time.perf_counter()))
        publish(run, 0)
        report(rows[-1], progress)
    publish(run, max(row["step"] for row in rows if row["accepted"]))  # after an interruption too
    clean_step(run, rows[-1]["step"])
    while (reason := stop_reason(rows, settings)) is None:
        started = time.perf_counter()
        step = rows[-1]["step"] + 1
        pruned = step_path(run.path, step, "_pruned.safetensors")
        removed_path = step_path(run.path, step, "_removed.json")
        if pruned.exists() and removed_path.exists():  # interrupted after pruning: the same pruned model
            step_config = load_config_json(pruned.with_suffix(".json"))
            removed = json.loads(removed_path.read_text())
        else:  # step k-1's channels in the run's config (which --set may have changed since)
            channels = load_config_json(step_path(run.path, step - 1, ".json")).model.get("channels")
            step_config = dataclasses.replace(config, model={**config.model, "channels": channels})
            graph = build_graph(step_config).to(device)
            load_weights(step_path(run.path, step - 1), graph)
            if settings.criterion == "taylor":
                accumulate_gradients(graph, train_set, step_config, settings.taylor_batches, device)
            removed = prune_graph(graph, settings, importance_of(settings.criterion, graph))
            if not removed:
                reason = "no group can lose a channel (prune.min_channels, prune.round_to)"
                break
            model = {**step_config.model, "channels": layer_channels(graph)}
            step_config = dataclasses.replace(step_config, model=model)
            graph.zero_grad(set_to_none=True)
            write_json(pruned.with_suffix(".json"), step_config.to_dict())
            save_weights(pruned, graph, {"step": str(step)})
            write_removed(removed_path, removed)
        graph = build_graph(step_config)  # also proves the pruned model rebuilds from its config
        finetune_dir = step_path(run.path, step, "_finetune")
        loss = None
        if settings.finetune_steps > 0:
            finetune = with_train(step_config, steps=settings.finetune_steps, seed=config.train.seed + step,
                                  val_interval=settings.finetune_steps,
                                  checkpoint_interval=min(config.train.checkpoint_interval,
                                                          settings.finetune_steps))
            result = train(finetune, finetune_dir, init=pruned, train_set=train_set, val_set=None,
                           progress=progress)
            loss = finetune_mean_loss(result)
            load_weights(RunFolder(finetune_dir).weights_path("latest"), graph)
        else:
            load_weights(pruned, graph)
        rows.append(record_step(run, step, graph, step_config, settings, val_set, device, removed, rows,
                                loss, started))
        if rows[-1]["accepted"]:
            publish(run, step)
        clean_step(run, step)
        report(rows[-1], progress)
    final = max(row["step"] for row in rows if row["accepted"])
    return {"rows": rows, "reason": reason, "step": final}


def report(row: dict, progress: bool) -> None:
    if not progress:
        return
    timing = row["cpu_s_per_1080p_frame"]
    print(f"step {row['step']}: {row['gflop_per_megapixel']:.2f} GFLOP/MP ({row['flops_ratio']:.3f} of "
          f"unpruned), {row['parameters']:,} parameters, {row['channels']} channels "
          f"(-{row['removed_channels']}), validation PSNR {row['psnr']:.3f} dB (drop {row['psnr_drop']:.3f})"
          + (f", {timing:.3f} s per frame" if timing is not None else "")
          + ("" if row["accepted"] else ": rejected"), flush=True)


def prepare_run(run_dir: str | Path | None, config_paths: list[str], prune_config: str | None,
                overrides: list[str], init: str | None) -> Path:
    """Write (new run) or update (``overrides`` on an existing one) the run's prune.json; returns the run
    folder. See the module docstring for where each setting comes from."""
    if run_dir is not None and (Path(run_dir) / "prune.json").exists():
        if config_paths or prune_config or init:
            raise ValueError(f"{run_dir} already holds a prune run: resume it with --run-dir and --set only")
        stored = json.loads((Path(run_dir) / "prune.json").read_text())
        prune_raw, raw = stored["prune"], stored["config"]
        for assignment in overrides:
            if assignment.startswith("prune."):
                prune_raw = apply_override({"prune": prune_raw}, assignment)["prune"]
            else:
                raw = apply_override(raw, assignment)
        stored.update(prune=dataclasses.asdict(settings_from_dict(prune_raw)),
                      config=config_from_dict(raw).to_dict())
        write_json(Path(run_dir) / "prune.json", stored)
        return Path(run_dir)
    if init is None:
        raise ValueError("a new prune run needs --init (the trained weights to prune)")
    if not Path(init).exists():
        raise FileNotFoundError(f"--init {init}: no such file")
    sections = read_yaml(prune_config) if prune_config else {}
    unknown = sorted(set(sections) - {"prune", "finetune"})
    if unknown:
        raise ValueError(f"{prune_config}: unknown section {unknown[0]} (expected prune, finetune)")
    if config_paths:
        base = load_config(config_paths)
    elif Path(init).with_suffix(".json").exists():
        base = load_config_json(Path(init).with_suffix(".json"))
    else:
        raise ValueError(f"give --config: no {Path(init).with_suffix('.json')} beside --init")
    overlay = sections.get("finetune") or {}
    raw, prune_raw = merge(base.to_dict(), overlay), sections.get("prune") or {}
    named = "name" in overlay
    for assignment in overrides:
        if assignment.startswith("prune."):
            prune_raw = apply_override({"prune": prune_raw}, assignment)["prune"]
        else:
            raw = apply_override(raw, assignment)
            named = named or assignment.startswith("name=")
    if not named:
        raw["name"] = f"{raw['name']}_pruned"
    config, settings = config_from_dict(raw), settings_from_dict(prune_raw)
    run_path = Path(run_dir) if run_dir else Path("runs") / config.name
    if (run_path / "prune.json").exists():
        raise ValueError(f"{run_path} already holds a prune run: resume it with --run-dir {run_path} only")
    if (run_path / "config.json").exists():
        raise ValueError(f"{run_path} already holds another run; choose another --run-dir")
    write_json(run_path / "prune.json", {"prune": dataclasses.asdict(settings), "config": config.to_dict(),
                                         "init": str(init)})
    return run_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init", help="trained weights to prune (.safetensors; its .json is the config "
                        "unless --config is given)")
    parser.add_argument("--config", action="append", default=[], help="training config YAML (repeatable)")
    parser.add_argument("--prune-config", help="YAML with prune: settings and a finetune: config overlay")
    parser.add_argument("--run-dir", help="run folder (default runs/<config name>); an existing one resumes")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="prune.* setting or config override")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or step lines")
    args = parser.parse_args(argv)
    try:
        run_path = prepare_run(args.run_dir, args.config, args.prune_config, args.set, args.init)
        result = run_pruning(run_path, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"prune: error: {error}", file=sys.stderr)
        return 2
    row = next(row for row in result["rows"] if row["step"] == result["step"])
    print(f"pruned to step {result['step']} in {run_path}: {row['flops_ratio']:.3f} of the FLOPs, validation "
          f"PSNR {row['psnr']:.3f} dB ({row['psnr_drop']:+.3f} dB drop); stopped: {result['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
