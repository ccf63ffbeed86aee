"""Channel pruning (training/prune.py): exactly the reported channels go, on every kernel-predicting
network; the criteria pick what they say; a pruned run exports, runs in denoiser_core like its torch
module, and resumes."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from denoiser_core import load_model
from denoiser_core.models import read_model_info
from tests.exr_fixtures import synthetic_passes
from tests.training_helpers import CONFIGS, REPO, TINY, tiny_config, untrained_run
from training.archs.blocks import ChannelAttention, DifferencesConv2d
from training.archs.summary import flops_per_megapixel
from training.checkpoint import RunFolder
from training.config import load_config_json
from training.export import export_run
from training.graph import build_graph, example_inputs
from training.prune import (
    PruneSettings,
    channels_to_keep,
    importance_of,
    layer_channels,
    output_layers,
    prepare_run,
    prune_graph,
    run_pruning,
)

KERNEL_PREDICTING = ["fast", "kpcn", "kprcn", "kprcan"]  # fast is the kpunet


def randomised_graph(name: str, seed: int = 0):
    """A tiny graph whose batch norms hold varied statistics, so every pruned tensor is distinctive."""
    torch.manual_seed(seed)
    graph = build_graph(tiny_config(name)).eval()
    with torch.no_grad():
        for module in graph.modules():
            if isinstance(module, nn.BatchNorm2d):
                for tensor in (module.weight, module.bias, module.running_mean):
                    tensor.normal_()
                module.running_var.uniform_(0.5, 2.0)
    return graph


def conv_flops(graph) -> tuple[dict[str, float], float]:
    """FLOPs of each convolution per megapixel (2 per multiply-add), on the input size and in the units of
    ``flops_per_megapixel`` (which adds the kernel application's taps to the same sum)."""
    size = -(-128 // graph.size_multiple) * graph.size_multiple
    per_layer: dict[str, float] = {}

    def hook(name):
        def count(module, inputs, output):
            # a folded first convolution reads [x, extra] (not their differences) with a kernel 1 px larger
            kernel = module.kernel_size[0] + (1 if isinstance(module, DifferencesConv2d) else 0)
            per_output = inputs[0].shape[1] * kernel * kernel
            per_layer[name] = 2 * output[0].numel() * per_output * 1e6 / (size * size)
        return count

    hooks = [m.register_forward_hook(hook(n)) for n, m in graph.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        graph.eval()(**example_inputs(graph, size, size))
    for handle in hooks:
        handle.remove()
    return per_layer, flops_per_megapixel(graph)


def expected_after(before: dict[str, torch.Tensor], removed: list[dict]) -> dict[str, torch.Tensor]:
    """``before`` (a state dict) with the reported indices deleted: output channels are dim 0 of every
    tensor of a layer, input channels dim 1 of a convolution's weight."""
    expected = {key: value.clone() for key, value in before.items()}
    for group in removed:
        for layer in group["layers"]:
            dim = 0 if layer["dim"] == "out" else 1
            for key in [k for k in expected if k.rpartition(".")[0] == layer["layer"]]:
                tensor = expected[key]
                if tensor.dim() <= dim:  # a bias has no input channels; num_batches_tracked no channels
                    continue
                keep = [i for i in range(tensor.shape[dim]) if i not in set(layer["indices"])]
                expected[key] = tensor.index_select(dim, torch.tensor(keep, dtype=torch.long))
    return expected


@pytest.mark.parametrize("name", KERNEL_PREDICTING)
def test_pruning_removes_exactly_the_channels_it_reports(name):
    graph = randomised_graph(name)
    before = {k: v.clone() for k, v in graph.state_dict().items()}
    shapes = layer_channels(graph)
    flops_before_layers, flops_before = conv_flops(graph)
    settings = PruneSettings(fraction=0.25, min_channels=2)
    removed = prune_graph(graph, settings, importance_of("l1", graph))

    assert removed, "every tiny network has channels to prune"
    after = graph.state_dict()
    expected = expected_after(before, removed)
    assert set(after) == set(expected)
    for key, tensor in after.items():
        assert torch.equal(tensor, expected[key]), key  # the kept channels keep their exact weights
    for group in removed:  # each coupled group lost what channels_to_keep allows
        count = shapes[group["group"]][1]
        assert group["removed"] == count - channels_to_keep(count, settings) > 0
        assert all(len(layer["indices"]) == group["removed"] for layer in group["layers"])
    # outputs (k*k kernel logits, blend weights) and the input channels are untouched
    for net in graph.nets.values():
        for layer in output_layers(net):
            assert layer.out_channels == shapes[next(n for n, m in graph.named_modules() if m is layer)][1]
    first = [n for n, (cin, _) in shapes.items() if cin == graph.feature_channels]
    assert len(first) == 2 and all(layer_channels(graph)[n][0] == graph.feature_channels for n in first)
    # FLOPs: every convolution's cost scales with in x out channels, the kernel taps stay
    new_shapes = layer_channels(graph)
    saved = sum(flops * (1 - (new_shapes[n][0] * new_shapes[n][1]) / (shapes[n][0] * shapes[n][1]))
                for n, flops in flops_before_layers.items())
    assert saved > 0
    assert flops_per_megapixel(graph) == pytest.approx(flops_before - saved, rel=1e-9)


def test_channel_attention_is_pruned_with_the_residual_trunk():
    graph = randomised_graph("kprcan")
    prune_graph(graph, PruneSettings(fraction=0.25, min_channels=2), importance_of("l1", graph))
    for net in graph.nets.values():
        width = net.head.out_channels
        assert width == 9  # 12 - 3: head, every block's convs and the group's closing conv share channels
        attentions = [m for m in net.modules() if isinstance(m, ChannelAttention)]
        assert attentions and all(a.reduce.in_channels == a.expand.out_channels == width for a in attentions)
        # the attention's hidden layer is a group of its own: 3 channels, a quarter rounds to 1
        assert all(a.reduce.out_channels == a.expand.in_channels == 2 for a in attentions)


def test_a_pruned_config_rebuilds_the_pruned_module():
    graph = randomised_graph("fast")
    prune_graph(graph, PruneSettings(fraction=0.5, min_channels=2), importance_of("l1", graph))
    config = tiny_config("fast")
    pruned = dataclasses.replace(config, model={**config.model, "channels": layer_channels(graph)})
    rebuilt = build_graph(pruned)
    rebuilt.load_state_dict(graph.state_dict())  # strict: every shape fits
    inputs = example_inputs(graph, 16, 24)
    with torch.no_grad():
        for a, b in zip(graph.eval()(**inputs), rebuilt.eval()(**inputs), strict=True):
            assert torch.equal(a, b)
    with pytest.raises(ValueError, match="does not have"):
        build_graph(dataclasses.replace(config, model={**config.model, "channels": {"nets.nowhere": [1, 1]}}))


def removed_from(graph, conv: nn.Conv2d, criterion: str) -> set[int]:
    """Channels of ``conv``'s group that ``criterion`` removes (a quarter of them)."""
    path = next(n for n, m in graph.named_modules() if m is conv)
    settings = PruneSettings(fraction=0.25, min_channels=2)
    removed = prune_graph(graph, settings, importance_of(criterion, graph))
    return set(next(g for g in removed if g["group"] == path)["layers"][0]["indices"])


def test_l1_and_bn_scale_remove_what_they_rank_lowest():
    def kpcn_with_faint_channels():  # near-zero weights writing and reading channels 2 and 5
        graph = randomised_graph("kpcn")
        with torch.no_grad():
            graph.nets["diffuse"].head[0].weight[[2, 5]] *= 1e-4
            graph.nets["diffuse"].body[0][0].weight[:, [2, 5]] *= 1e-4
        return graph, graph.nets["diffuse"].head[0]

    def fast_with_small_scales():  # tiny BN gamma on channels 2 and 5, whose filters are the largest
        graph = randomised_graph("fast")
        encoder = graph.nets["diffuse"].encoders[0][0]
        with torch.no_grad():
            encoder[0].weight[[2, 5]] *= 100
            encoder[1].weight[[2, 5]] = 1e-4
        return graph, encoder[0]

    assert {2, 5} <= removed_from(*kpcn_with_faint_channels(), "l1")
    assert {2, 5} <= removed_from(*fast_with_small_scales(), "bn_scale")
    assert not {2, 5} & removed_from(*fast_with_small_scales(), "l1")  # l1 ranks them highest
    with pytest.raises(ValueError, match="batch norm"):
        importance_of("bn_scale", build_graph(tiny_config("kprcan")))


def test_taylor_removes_channels_the_loss_does_not_depend_on():
    """Channels 4 and 7 have the largest filters but a bias that keeps their ReLU at zero: no loss
    gradient reaches them (|w * dL/dw| = 0), so taylor removes them where l1 keeps them."""
    from training.data import build_datasets
    from training.prune import accumulate_gradients

    def dead_channels():
        graph = randomised_graph("kpcn")
        conv = graph.nets["diffuse"].head[0]
        with torch.no_grad():
            conv.weight[[4, 7]] *= 10
            conv.bias[[4, 7]] = -1e4
        return graph, conv

    config = tiny_config("kpcn")
    train_set, _ = build_datasets(config)
    graph, conv = dead_channels()
    accumulate_gradients(graph, train_set, config, 2, torch.device("cpu"))
    assert conv.weight.grad[[0, 1, 2, 3]].abs().sum() > 0 and conv.weight.grad[[4, 7]].abs().sum() == 0
    assert {4, 7} <= removed_from(graph, conv, "taylor")
    assert not {4, 7} & removed_from(*dead_channels(), "l1")


def start_run(tmp_path, name: str, overrides: list[str]):
    source = untrained_run(tiny_config(name), tmp_path / "trained")
    return prepare_run(tmp_path / "run", [str(CONFIGS / f"{name}.yaml"), str(TINY)],
                       str(CONFIGS / "prune" / "tiny.yaml"), overrides, str(source.weights_path("latest")))


def test_pruned_run_exports_and_denoises_through_the_core_like_its_torch_module(tmp_path):
    run_path = start_run(tmp_path, "fast", ["prune.max_steps=1", "prune.finetune_steps=2"])
    result = run_pruning(run_path, progress=False)
    rows = result["rows"]
    assert [row["step"] for row in rows] == [0, 1] and result["step"] == 1
    assert rows[1]["gflop_per_megapixel"] < rows[0]["gflop_per_megapixel"]
    assert rows[1]["parameters"] < rows[0]["parameters"]
    assert rows[0]["channels"] - rows[1]["channels"] == rows[1]["removed_channels"] > 0
    assert all(np.isfinite(row["psnr"]) and row["cpu_s_per_1080p_frame"] > 0 for row in rows)

    path = export_run(run_path, tmp_path / "models" / "pruned.onnx")  # like any run folder
    info = read_model_info(path)
    assert info.name == "pruned" and info.architecture == "kpunet"
    assert info.parameters == rows[1]["parameters"]
    assert path.stat().st_size < (run_path / "steps" / "step_000.onnx").stat().st_size
    config = load_config_json(path.with_suffix(".json"))
    assert config.model["channels"] == json.loads(
        (run_path / "steps" / "step_001.json").read_text())["model"]["channels"]
    graph = build_graph(config).eval()
    graph.load_state_dict(load_file(str(path.with_suffix(".safetensors"))))

    result = load_model(str(path), device="cpu").denoise(synthetic_passes(48, 64), tile=1024)
    parts = result.parts
    feeds = {name: torch.from_numpy(np.ascontiguousarray(getattr(parts, name).transpose(2, 0, 1)))[None]
             for name in graph.input_names}
    with torch.no_grad():
        expected = [t[0].numpy().transpose(1, 2, 0) for t in graph(**feeds)]
    for name, want in zip(("diffuse_denoised", "specular_denoised"), expected, strict=True):
        np.testing.assert_allclose(result.outputs[name], want, atol=1e-4, rtol=0)


def test_a_resumed_prune_run_continues_from_its_last_step(tmp_path):
    run_path = start_run(tmp_path, "kprcan", ["prune.max_steps=1"])
    first = run_pruning(run_path, progress=False)
    assert first["reason"].startswith("prune.max_steps 1") and first["step"] == 1
    step1_weights = (run_path / "steps" / "step_001.safetensors").read_bytes()
    assert not (run_path / "steps" / "step_001_finetune" / "checkpoints").exists()  # no pickles kept

    prepare_run(run_path, [], None, ["prune.max_steps=2", "optimizer.lr=0.0005"], None)
    second = run_pruning(run_path, progress=False)
    assert [row["step"] for row in second["rows"]] == [0, 1, 2] and second["step"] == 2
    assert second["rows"][:2] == first["rows"]  # steps 0 and 1 were not redone
    assert (run_path / "steps" / "step_001.safetensors").read_bytes() == step1_weights
    # step 2 pruned step 1's model: its groups lost a share of step 1's channel counts
    step1 = load_config_json(run_path / "steps" / "step_001.json").model["channels"]
    removed = json.loads((run_path / "steps" / "step_002_removed.json").read_text())
    settings = PruneSettings(**json.loads((run_path / "prune.json").read_text())["prune"])
    for group in removed:
        count = step1[group["group"]][1]
        assert group["removed"] == count - channels_to_keep(count, settings)
    # a config override given on resuming reaches the steps after it
    assert load_config_json(run_path / "steps" / "step_002.json").optimizer.lr == 0.0005
    assert load_config_json(run_path / "steps" / "step_001.json").optimizer.lr != 0.0005
    # the run folder's model is now step 2's, and export rebuilds it
    assert load_config_json(RunFolder(run_path).config_path).model["channels"] == load_config_json(
        run_path / "steps" / "step_002.json").model["channels"]
    assert load_file(str(RunFolder(run_path).weights_path("latest"))).keys() == load_file(
        str(run_path / "steps" / "step_002.safetensors")).keys()
    # finished: another call does nothing
    assert run_pruning(run_path, progress=False)["rows"] == second["rows"]


def test_quality_floor_rejects_a_step_and_keeps_the_one_before(tmp_path):
    from training.train import train

    trained = tiny_config("kpcn", ["train.steps=60", "train.checkpoint_interval=60"])
    train(trained, tmp_path / "trained", progress=False)  # a model with something to lose
    run_path = prepare_run(tmp_path / "run", [str(CONFIGS / "kpcn.yaml"), str(TINY)],
                           str(CONFIGS / "prune" / "tiny.yaml"),
                           ["prune.max_psnr_drop=0.05", "prune.finetune_steps=0", "prune.fraction=0.75"],
                           str(RunFolder(tmp_path / "trained").weights_path("latest")))
    result = run_pruning(run_path, progress=False)
    rows = result["rows"]
    assert [row["step"] for row in rows] == [0, 1]
    assert rows[1]["psnr_drop"] > 0.05 and not rows[1]["accepted"]
    assert result["step"] == 0 and "lost" in result["reason"]
    # the run's model stays the unpruned one, and a resumed run does not go past the floor
    assert "channels" not in load_config_json(RunFolder(run_path).config_path).model
    assert (RunFolder(run_path).weights_path("latest").read_bytes()
            == (run_path / "steps" / "step_000.safetensors").read_bytes())
    assert run_pruning(run_path, progress=False)["rows"] == rows


def test_cli_refuses_bad_settings_in_one_line(tmp_path):
    source = untrained_run(tiny_config("kprcan"), tmp_path / "trained")
    result = subprocess.run(
        [sys.executable, "-m", "training.prune", "--init", str(source.weights_path("latest")),
         "--config", str(CONFIGS / "kprcan.yaml"), "--config", str(TINY),
         "--prune-config", str(CONFIGS / "prune" / "tiny.yaml"), "--set", "prune.criterion=bn_scale",
         "--run-dir", str(tmp_path / "run"), "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "batch norm" in result.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # refused before any work


@pytest.mark.slow
def test_cli_prunes_resumes_and_the_run_exports_with_training_export(tmp_path):
    source = untrained_run(tiny_config("fast"), tmp_path / "trained")
    command = [sys.executable, "-m", "training.prune", "--run-dir", str(tmp_path / "run"), "--no-progress"]
    first = subprocess.run(command + ["--init", str(source.weights_path("latest")), "--config",
                                      str(CONFIGS / "fast.yaml"), "--config", str(TINY), "--prune-config",
                                      str(CONFIGS / "prune" / "tiny.yaml"), "--set", "prune.max_steps=1",
                                      "--set", "prune.criterion=taylor"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "pruned to step 1" in first.stdout and "prune.max_steps 1 reached" in first.stdout
    again = subprocess.run(command + ["--config", str(CONFIGS / "fast.yaml")], cwd=REPO, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 2 and "resume it with --run-dir and --set only" in again.stderr
    second = subprocess.run(command + ["--set", "prune.max_steps=2"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 1, 2] and rows[2]["criterion"] == "taylor"
    out = tmp_path / "models" / "small.onnx"
    export = subprocess.run([sys.executable, "-m", "training.export", str(tmp_path / "run"), "-o", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert export.returncode == 0, export.stderr
    info = read_model_info(out)
    assert info.parameters == rows[2]["parameters"] < rows[0]["parameters"]
    assert info.name == "small" and json.loads(info.metadata["kprcan.config"])["name"] == "fast_pruned"
