"""Training loop: every architecture learns, NaN batches are skipped, runs resume, DDP with 2 processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.training_helpers import CONFIGS, REPO, TINY, TRAINED_ARCHS, tiny_config
from training.checkpoint import RunFolder
from training.data import SyntheticDataset
from training.train import train

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", TRAINED_ARCHS)
def test_each_architecture_learns_on_synthetic_data(name, tmp_path):
    config = tiny_config(name)
    result = train(config, tmp_path / "run", progress=False)
    assert result["step"] == config.train.steps and result["skipped"] == 0
    first_stage = [loss for _step, stage, loss in result["losses"] if stage == 0]
    start, end = sum(first_stage[:20]) / 20, sum(first_stage[-40:]) / 40
    assert end < 0.8 * start, f"{name}: loss {start:.4f} -> {end:.4f}"
    run = RunFolder(tmp_path / "run")
    assert run.has("latest") and run.has("best")
    assert json.loads(run.config_path.read_text()) == config.to_dict()


class PoisonedDataset(torch.utils.data.Dataset):
    """Synthetic samples with NaN in one sample's noisy diffuse input (a corrupt patch)."""

    def __init__(self, poisoned: int):
        self.base, self.poisoned = SyntheticDataset(32, 32, cache=True), poisoned

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        sample = dict(self.base[index])
        if index == self.poisoned:
            sample["diffuse"] = sample["diffuse"].clone()
            sample["diffuse"][:, 3, 5] = float("nan")
        return sample


def test_nan_batch_is_skipped_and_counted(tmp_path):
    config = tiny_config("kpcn", ["train.steps=8", "train.val_interval=1000"])  # one epoch of 8 batches
    result = train(config, tmp_path / "run", train_set=PoisonedDataset(5), val_set=None, progress=False)
    assert result["step"] == 8 and result["skipped"] == 1 and len(result["losses"]) == 7
    state = RunFolder(tmp_path / "run").load_state("latest")
    assert state["skipped"] == 1
    from safetensors.torch import load_file
    weights = load_file(str(RunFolder(tmp_path / "run").weights_path("latest")))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_nan_batch_leaves_batch_norm_statistics_as_they_were(tmp_path):
    """fast normalises with BatchNorm, whose forward pass updates its running statistics: a skipped
    batch must not leave NaN there (the exported model would output NaN everywhere)."""
    config = tiny_config("fast", ["train.steps=8", "train.val_interval=1000"])
    assert config.model["norm"] == "batch"
    result = train(config, tmp_path / "run", train_set=PoisonedDataset(5), val_set=None, progress=False)
    assert result["skipped"] == 1 and len(result["losses"]) == 7
    from safetensors.torch import load_file
    weights = load_file(str(RunFolder(tmp_path / "run").weights_path("latest")))
    running = {name: w for name, w in weights.items() if "running_" in name or "num_batches" in name}
    assert running and all(torch.isfinite(w.float()).all() for w in running.values())
    # the skipped batch did not count: BatchNorm saw the 7 batches that trained
    assert {int(w) for name, w in running.items() if "num_batches" in name} == {7}


def test_resume_continues_the_step_count_and_the_stage(tmp_path):
    run_dir = tmp_path / "run"
    first = train(tiny_config("kpcn", ["train.steps=30", "train.checkpoint_interval=10"]), run_dir,
                  progress=False)
    assert first["step"] == 30
    resumed = train(tiny_config("kpcn", ["train.steps=50", "train.checkpoint_interval=10"]), run_dir,
                    progress=False)
    steps = [step for step, _stage, _loss in resumed["losses"]]
    assert steps[0] == 30 and resumed["step"] == 50
    stages = {step: stage for step, stage, _loss in resumed["losses"]}
    assert stages[30] == 0 and stages[49] == 1  # tiny.yaml: 80 % components, then joint
    assert RunFolder(run_dir).load_state("latest")["step"] == 50


def run_script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=environment)


def test_script_resumes_but_refuses_a_different_config(tmp_path):
    run_dir = tmp_path / "run"
    args = ["training/train.py", "--config", str(CONFIGS / "kpcn.yaml"), "--config", str(TINY),
            "--run-dir", str(run_dir), "--no-progress", "--set", "train.steps=4"]
    result = run_script(*args)
    assert result.returncode == 0, result.stderr
    assert "to step 4" in result.stdout
    before = (run_dir / "config.json").read_text()
    clash = run_script("training/train.py", "--config", str(CONFIGS / "fast.yaml"), "--config", str(TINY),
                       "--run-dir", str(run_dir), "--no-progress")
    assert clash.returncode == 2 and "different config" in clash.stderr
    assert (run_dir / "config.json").read_text() == before
    more = run_script("training/train.py", "--run-dir", str(run_dir), "--no-progress",
                      "--set", "train.steps=6")
    assert more.returncode == 0, more.stderr
    assert RunFolder(run_dir).load_state("latest")["step"] == 6


def test_distributed_data_parallel_with_two_cpu_processes(tmp_path):
    run_dir = tmp_path / "ddp"
    result = run_script("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "training/train.py", "--config", str(CONFIGS / "kprcn.yaml"), "--config", str(TINY),
                        "--run-dir", str(run_dir), "--no-progress", "--set", "train.steps=6",
                        "--set", "train.val_interval=3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world size 2" in result.stdout
    state = RunFolder(run_dir).load_state("latest")
    assert state["step"] == 6 and state["world_size"] == 2 and state["skipped"] == 0


def test_validation_curve_is_logged_across_resume_and_reported(tmp_path):
    from training import study

    run_dir = tmp_path / "study" / "kpcn"
    train(tiny_config("kpcn", ["train.steps=20", "train.val_interval=10"]), run_dir, progress=False)
    train(tiny_config("kpcn", ["train.steps=30", "train.val_interval=10"]), run_dir, progress=False)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [10, 20, 30]
    assert rows[0]["seconds"] <= rows[1]["seconds"] <= rows[2]["seconds"]  # time carries over a resume
    assert len({row["noisy_psnr"] for row in rows}) == 1  # the same validation images every time
    assert all(row["l1"] > 0 and row["relmse"] > 0 and row["train_loss"] > 0 for row in rows)
    assert study.finished(run_dir)
    table = study.report(tmp_path / "study")
    best = max(rows, key=lambda row: row["psnr"])
    assert f"| {best['psnr']:.2f} ({best['step']}) |" in table
    assert "| kprcn | residual blocks | | not run |" in table


def test_validation_that_reads_only_part_of_the_set_says_so(tmp_path, capsys):
    config = tiny_config("kpcn", ["train.steps=2", "train.val_interval=2"])  # reads 2 batches of 4
    train_set = SyntheticDataset(16, config.data.patch_size, seed=0)
    val_set = SyntheticDataset(12, config.data.patch_size, seed=1)
    train(config, tmp_path / "part", train_set=train_set, val_set=val_set, progress=False)
    assert "validation reads 8 of 12 images" in capsys.readouterr().err
    config = tiny_config("kpcn", ["train.steps=2", "train.val_interval=2", "data.val_batches=3"])
    train(config, tmp_path / "all", train_set=train_set, val_set=val_set, progress=False)
    assert "validation reads" not in capsys.readouterr().err


def test_minutes_plans_the_steps_from_a_probe_and_records_them(tmp_path):
    from training.train import plan_steps, validation_interval

    assert plan_steps(100.0, 0.09) == 1000 and plan_steps(1000.0, 0.5) == 1800
    # validations of 2 s come off the 90 s: 800 steps (72 s) validate 8 times (16 s); 900 would not fit
    assert plan_steps(100.0, 0.09, per_validation_s=2.0) == 800
    for budget, per_step, per_validation in ((100.0, 0.09, 2.0), (600.0, 0.05, 5.0), (3000.0, 0.02, 30.0)):
        steps = plan_steps(budget, per_step, per_validation_s=per_validation)
        for planned in (steps, steps + 100):
            validations = -(-planned // validation_interval(planned))
            fits = planned * per_step + validations * per_validation <= budget * 0.9 + 1e-9
            assert fits == (planned == steps), (budget, planned)
    with pytest.raises(ValueError, match="give more --minutes"):
        plan_steps(10.0, 1.0)
    with pytest.raises(ValueError, match="give more --minutes"):
        plan_steps(100.0, 0.01, per_validation_s=100.0)
    run_dir = tmp_path / "timed"
    args = ["training/train.py", "--config", str(CONFIGS / "kpcn.yaml"), "--config", str(TINY), "--minutes",
            "0.6", "--run-dir", str(run_dir), "--probe-steps", "10", "--no-progress"]
    done = run_script(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "steps planned in" in done.stderr
    config = json.loads((run_dir / "config.json").read_text())["train"]
    assert f"to step {config['steps']} " in done.stdout
    assert config["steps"] >= 100 and config["steps"] % 100 == 0
    assert config["val_interval"] == config["checkpoint_interval"] == validation_interval(config["steps"])
    assert RunFolder(run_dir).load_state("latest")["step"] == config["steps"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < row["validation_seconds"] < row["seconds"] for row in rows)
    again = run_script(*args)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    # the probe starts from --init's weights as the run does (its validation scores are the run's)
    missing = tmp_path / "missing.safetensors"
    started = run_script(*args[:-5], "--run-dir", str(tmp_path / "from-init"), "--init", str(missing),
                         "--probe-steps", "10", "--no-progress")
    assert started.returncode == 2 and "missing.safetensors" in started.stderr
    assert "steps planned in" not in started.stderr
