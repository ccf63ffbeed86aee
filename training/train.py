#!/usr/bin/env python
"""Train a denoiser graph (docs/contract.md) from a config.

    python training/train.py --config training/configs/fast.yaml [--config more.yaml] [--run-dir runs/NAME]
                             [--set train.steps=200 --set data.batch_size=8] [--init models/fast.safetensors]
    python training/train.py --config training/configs/quality.yaml --minutes 10 --run-dir runs/q
    torchrun --nproc_per_node 2 training/train.py --config ...     # DistributedDataParallel (gloo/nccl)

(``python -m training.train`` is the same; both need the package installed: ``pip install -e ".[train]"``.)

The run folder (default ``runs/<config name>``) gets ``config.json``, ``checkpoints/``, ``tb/`` and
``metrics.jsonl``. An existing run folder resumes from its latest checkpoint with its stored config
(``--set`` may change it, e.g. more steps); passing a *different* ``--config`` for it is an error, nothing
is overwritten.
``--init`` starts a new run from exported weights (its ``.json`` config is used if no ``--config``).

``--minutes`` trains a new run for a wall-clock budget (a rented GPU for an hour, a workstation for a
night). A learning-rate schedule needs its length up front, so a short probe run (``--probe-steps``, in
a temporary folder, thrown away) measures the seconds per step, validation included, on this machine
with these data; ``train.steps`` (and the validation/checkpoint intervals, a tenth of it) is then set
so that the run ends inside the budget, and its config.json records the steps chosen. Resume or extend
it like any run, without ``--minutes``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from training.checkpoint import RunFolder, load_weights, write_json
from training.config import Config, apply_override, config_from_dict, load_config, load_config_json
from training.data import batch_stream, build_datasets, validation_batches
from training.graph import build_graph
from training.losses import (
    POINTWISE,
    DenoiseLoss,
    psnr,
    recombine_batch,
    reference_beauty,
    stage_loss,
    tonemap,
)
from training.optim import build_optimizer, build_scheduler, stage_at, stage_bounds

VAL_KEYS = ("psnr", "noisy_psnr", "l1", "relmse")


def append_metrics(path: Path, row: dict) -> None:
    """One JSON line per validation: the run's curve, readable without TensorBoard (training/study.py)."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


class TrainingStep(nn.Module):
    """What DistributedDataParallel wraps: a batch dict in, the graph's outputs out."""

    def __init__(self, graph: nn.Module):
        super().__init__()
        self.graph = graph

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.graph.denoise(batch)


def setup_distributed(preference: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment; initialises the process group."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    use_cuda = preference == "cuda" or (preference == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
        # fixed patch shapes: let cuDNN pick its fastest convolutions once; TF32 matmuls as convs use
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return rank, world, device


@torch.no_grad()
def validate(graph: nn.Module, dataset, config: Config, device: torch.device) -> dict[str, float]:
    """Validation scores of the recombined image: mean PSNR (tonemapped as ``loss.tonemap``) of the
    denoised and the noisy input, and two losses that do not depend on the run's training loss (so runs
    with different losses compare): ``l1`` of the tonemapped images and ``relmse`` in HDR."""
    graph.eval()
    scores: dict[str, list[torch.Tensor]] = {key: [] for key in VAL_KEYS}
    batches = validation_batches(dataset, config.data.batch_size, config.data.val_batches)
    for batch in torch.utils.data.DataLoader(dataset, batch_sampler=batches):
        batch = {k: v.to(device).float() for k, v in batch.items()}
        out = graph.denoise(batch)
        reference = reference_beauty(batch)
        denoised = recombine_batch(batch, out["diffuse"], out["specular"], out.get("diffuse_color"),
                                   out.get("volume"))
        noisy = recombine_batch(batch, batch["diffuse"], batch["specular"])
        scores["psnr"].append(psnr(denoised, reference, config.loss.tonemap))
        scores["noisy_psnr"].append(psnr(noisy, reference, config.loss.tonemap))
        shown = (tonemap(denoised, config.loss.tonemap), tonemap(reference, config.loss.tonemap))
        scores["l1"].append(POINTWISE["l1"](*shown).flatten(1).mean(1))
        scores["relmse"].append(POINTWISE["relmse"](denoised, reference).flatten(1).mean(1))
    graph.train()
    return {name: float(torch.cat(values).mean()) for name, values in scores.items()}


def train(config: Config, run_dir: str | Path, init: str | Path | None = None, train_set=None, val_set=None,
          progress: bool = True) -> dict:
    """Train (or resume) the run in ``run_dir``. Returns the final step, the skipped (non-finite)
    batches, ``losses`` as (step, stage, loss) of this call's optimiser steps, and the best validation PSNR.

    ``train_set``/``val_set`` replace the datasets ``data.kind`` names (tests pass their own)."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    rank, world, device = setup_distributed(config.train.device)
    if config.train.threads > 0:
        torch.set_num_threads(config.train.threads)
    run = RunFolder(run_dir)
    if rank == 0:
        write_json(run.config_path, config.to_dict())
    if train_set is None:
        train_set, val_set = build_datasets(config)
    if rank == 0 and val_set is not None:
        batches = validation_batches(val_set, config.data.batch_size)
        read = sum(map(len, batches[:config.data.val_batches]))
        if read < len(val_set):  # validation curves compare only between runs that read the same images
            print(f"train: validation reads {read} of {len(val_set)} images (data.val_batches batches of "
                  f"data.batch_size); raise data.val_batches to {len(batches)} to read all", file=sys.stderr)
    torch.manual_seed(config.train.seed)
    graph = build_graph(config).to(device)
    resume = run.load_state("latest") if run.has("latest") else None
    if resume:
        load_weights(run.weights_path("latest"), graph)
    elif init:
        load_weights(Path(init), graph)
    if resume and init and rank == 0:
        print(f"train: {run.path} has a checkpoint; resuming it and ignoring --init {init}", file=sys.stderr)
    graph.to(device).train()
    model = TrainingStep(graph)
    if world > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    loss_fn = DenoiseLoss(config.loss)
    total, bounds = config.train.steps, stage_bounds(config)
    step = resume["step"] if resume else 0
    skipped = resume["skipped"] if resume else 0
    best = resume["best_psnr"] if resume else -math.inf
    stream = batch_stream(train_set, config, rank, world, step, device)
    writer = SummaryWriter(str(run.path / "tb")) if rank == 0 else None
    bar = tqdm(total=total, initial=step, disable=rank != 0 or not progress, desc=config.name, unit="step")
    stage_index, optimizer, scheduler, losses, window = None, None, None, [], []
    clock, patches = time.perf_counter(), 0
    started = clock - (resume.get("seconds", 0.0) if resume else 0.0)

    def save(tag: str) -> None:
        run.save(tag, graph, {"step": step, "stage": stage_index, "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict() if scheduler else {}, "skipped": skipped,
                              "best_psnr": best, "world_size": world,
                              "seconds": time.perf_counter() - started})

    while step < total:
        if stage_at(config, step) != stage_index:  # new stage: fresh optimiser at the stage's lr
            stage_index = stage_at(config, step)
            stage = config.stages[stage_index]
            optimizer = build_optimizer(config, graph.parameters(), stage.lr_scale)
            scheduler = build_scheduler(config, optimizer, bounds[stage_index][1] - bounds[stage_index][0])
            if resume and resume["stage"] == stage_index:
                optimizer.load_state_dict(resume["optimizer"])
                if scheduler:
                    scheduler.load_state_dict(resume["scheduler"])
            resume = None
        batch = {k: v.to(device, non_blocking=True).float() for k, v in next(stream).items()}
        # the forward pass updates BatchNorm's running statistics: kept to restore if the batch is skipped
        buffers = [buffer.clone() for buffer in graph.buffers()]
        loss = stage_loss(loss_fn, graph, model(batch), batch, stage.target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = config.train.grad_clip if config.train.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(graph.parameters(), clip)
        finite = (torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)).float()
        if world > 1:  # every process must take (or skip) the same step
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item() > 0:
            optimizer.step()
            if scheduler and config.schedule.type != "plateau":
                scheduler.step()
            losses.append((step, stage_index, loss.item()))
            window.append(losses[-1][2])
        else:
            skipped += 1
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for buffer, kept in zip(graph.buffers(), buffers, strict=True):
                    buffer.copy_(kept)
        step += 1
        patches += len(batch["diffuse"]) * world  # whole_smaller_views batches vary in count
        bar.update(1)
        if writer and (step % config.train.log_interval == 0 or step == total):
            elapsed = time.perf_counter() - clock
            mean_loss = sum(window) / max(1, len(window))
            bar.set_postfix(loss=f"{mean_loss:.4g}", patches_s=f"{patches / elapsed:.1f}", skipped=skipped)
            scalars = {"loss": mean_loss, "patches_per_s": patches / elapsed, "skipped": skipped,
                       "lr": optimizer.param_groups[0]["lr"]}
            for key, value in scalars.items():
                writer.add_scalar(f"train/{key}", value, step)
            clock, patches, window = time.perf_counter(), 0, []
        if val_set is not None and (step % config.train.val_interval == 0 or step == total):
            validation_started = time.perf_counter()
            scores = validate(graph, val_set, config, device) if rank == 0 else dict.fromkeys(VAL_KEYS, 0.0)
            score = torch.tensor([scores[key] for key in VAL_KEYS], device=device)  # nccl: device tensors
            if world > 1:
                dist.broadcast(score, 0)
            scores = dict(zip(VAL_KEYS, score.tolist(), strict=True))
            value = scores["psnr"]
            if scheduler and config.schedule.type == "plateau":
                scheduler.step(value)
            if writer:
                for key, number in scores.items():
                    writer.add_scalar(f"val/{key}", number, step)
                recent = [item[2] for item in losses[-config.train.val_interval:]]
                append_metrics(run.path / "metrics.jsonl", {
                    "step": step, "stage": stage_index, "seconds": round(time.perf_counter() - started, 3),
                    "validation_seconds": round(time.perf_counter() - validation_started, 3),
                    "train_loss": sum(recent) / len(recent) if recent else None,
                    **{key: round(number, 6) for key, number in scores.items()}})
                bar.write(f"step {step}: validation PSNR {value:.2f} dB "
                          f"(noisy {scores['noisy_psnr']:.2f} dB)")
            if value > best:
                best = value
                if rank == 0:
                    save("best")
        if rank == 0 and (step % config.train.checkpoint_interval == 0 or step == total):
            save("latest")
    bar.close()
    if writer:
        writer.close()
    return {"step": step, "skipped": skipped, "losses": losses, "best_psnr": best, "world_size": world}


def resolve_config(config_paths: list[str], overrides: list[str], run_dir: str | None,
                   init: str | None) -> tuple[Config, Path]:
    """The config and run folder to use (see the module docstring for the resume rules)."""
    fresh = load_config(config_paths, overrides) if config_paths else None
    if fresh is None and init and Path(init).with_suffix(".json").exists() and not (
            run_dir and (Path(run_dir) / "config.json").exists()):
        raw = load_config_json(Path(init).with_suffix(".json")).to_dict()
        for assignment in overrides:
            raw = apply_override(raw, assignment)
        fresh = config_from_dict(raw)
    if run_dir is None:
        if fresh is None:
            raise ValueError("give --config (or --run-dir of an existing run to resume)")
        run_dir = str(Path("runs") / fresh.name)
    run = RunFolder(run_dir)
    if run.config_path.exists():
        raw = load_config_json(run.config_path).to_dict()
        for assignment in overrides:
            raw = apply_override(raw, assignment)
        config = config_from_dict(raw)
        if fresh is not None and fresh.to_dict() != config.to_dict():
            raise ValueError(f"{run.path} already holds a run with a different config; "
                             "resume it without --config or choose another --run-dir")
    elif fresh is None:
        raise ValueError(f"{run.path} holds no run (no config.json): give --config to start one")
    else:
        config = fresh
    return config, run.path


BUDGET_SHARE = 0.9  # of the time left after the probe, for steps and validations; the rest absorbs saving


def with_train(config: Config, **values) -> Config:
    """``config`` with these ``train`` section values replaced."""
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **values))


def seconds_per_step(config: Config, probe_steps: int,
                     init: str | Path | None = None) -> tuple[float, float]:
    """Seconds per training step between the probe's two validations (after warm-up: cuDNN's algorithm
    search, the data workers' start), and seconds per validation (the second one). Apart, because a
    planned run validates about ten times in all (``validation_interval``), not once every half probe.
    The probe starts from ``init`` as the run will, so the validation scores it prints are the run's."""
    half = max(1, probe_steps // 2)
    probe = with_train(config, steps=2 * half, val_interval=half, checkpoint_interval=10**9,
                       log_interval=half)
    with tempfile.TemporaryDirectory(prefix="train-probe-") as folder:
        train(probe, folder, init=init, progress=False)
        rows = [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
    if len(rows) < 2:
        raise ValueError("--minutes needs validation data (data.val) to time its probe")
    validation = rows[-1]["validation_seconds"]
    # metrics.jsonl keeps milliseconds; a floor keeps an implausibly fast probe from planning without end
    return max(rows[-1]["seconds"] - rows[-2]["seconds"] - validation, 1e-3) / half, validation


def validation_interval(steps: int) -> int:
    """Validation (and checkpoint) interval of a run planned by --minutes: about a tenth of its steps, in
    hundreds, at least 100."""
    return max(100, steps // 10 // 100 * 100)


def plan_steps(budget_s: float, per_step_s: float, minimum: int = 100, per_validation_s: float = 0.0) -> int:
    """Steps that fit ``BUDGET_SHARE`` of the budget together with the validations their interval makes
    (``validation_interval``; the last at the last step), rounded down to a multiple of 100 (at least
    ``minimum``)."""
    available = budget_s * BUDGET_SHARE

    def needed(steps: int) -> float:
        return steps * per_step_s + -(-steps // validation_interval(steps)) * per_validation_s

    steps = int(available / per_step_s) // 100 * 100
    while steps > 0 and needed(steps) > available:
        steps -= 100
    if steps < minimum:
        raise ValueError(f"{budget_s:.0f} s fit only {steps} steps at {per_step_s:.3f} s/step; "
                         "give more --minutes")
    return steps


def fit_to_budget(config: Config, deadline: float, probe_steps: int,
                  init: str | Path | None = None) -> Config:
    """``config`` with the steps (and a tenth of them as validation/checkpoint interval) that end by
    ``deadline`` (``time.perf_counter()`` seconds), measured by a probe run."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--minutes plans a single-process run; give a torchrun run train.steps")
    per_step, per_validation = seconds_per_step(config, probe_steps, init)
    remaining = deadline - time.perf_counter()
    steps = plan_steps(remaining, per_step, per_validation_s=per_validation)
    interval = validation_interval(steps)
    print(f"train: {per_step:.4f} s/step and {per_validation:.1f} s/validation measured; {steps} steps "
          f"planned in {remaining:.0f} s", file=sys.stderr, flush=True)
    return with_train(config, steps=steps, val_interval=interval, checkpoint_interval=interval)


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=[], help="YAML config (repeat to overlay)")
    parser.add_argument("--run-dir", help="run folder (default runs/<config name>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--init", help="start from these weights (.safetensors, e.g. an exported model)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--minutes", type=float, help="train a new run for this wall-clock budget, probe "
                        "included (sets train.steps; see above)")
    parser.add_argument("--probe-steps", type=int, default=60, help="steps the --minutes probe times")
    args = parser.parse_args(argv)
    try:
        config, run_dir = resolve_config(args.config, args.set, args.run_dir, args.init)
        if args.minutes is not None:
            if RunFolder(run_dir).config_path.exists():
                raise ValueError(f"{run_dir} already holds a run: resume it without --minutes")
            config = fit_to_budget(config, started + args.minutes * 60, args.probe_steps, args.init)
        result = train(config, run_dir, init=args.init, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"train: error: {error}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if result["world_size"] == 1 or int(os.environ.get("RANK", "0")) == 0:
        best = f"{result['best_psnr']:.2f} dB" if math.isfinite(result["best_psnr"]) else "no validation"
        print(f"trained {config.name} to step {result['step']} in {run_dir} "
              f"(world size {result['world_size']}, {result['skipped']} batches skipped, "
              f"best validation PSNR {best})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
