"""training/average.py: a fine-tuned run averaged with the weights it started from, exported like any run."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file

from denoiser_core.models import read_model_info
from tests.training_helpers import tiny_config, untrained_run
from training.average import average_weights
from training.average import main as average_main
from training.checkpoint import load_weights
from training.export import export_run
from training.graph import build_graph, example_inputs


def test_floating_tensors_mix_and_counters_come_from_the_fine_tune():
    f16 = torch.float16
    start = {"w": torch.tensor([1.0, 2.0]), "steps": torch.tensor(3), "half": torch.tensor([4.0], dtype=f16)}
    tuned = {"w": torch.tensor([3.0, -2.0]), "steps": torch.tensor(7), "half": torch.tensor([8.0], dtype=f16)}
    mixed = average_weights(start, tuned, 0.25)
    assert torch.equal(mixed["w"], torch.tensor([1.5, 1.0])) and mixed["steps"].item() == 7
    assert mixed["half"].dtype == torch.float16 and mixed["half"].item() == 5.0
    assert torch.equal(average_weights(start, tuned, 0.0)["w"], start["w"])
    with pytest.raises(ValueError, match="in one only"):
        average_weights(start, {**tuned, "extra": torch.zeros(1)}, 0.5)
    with pytest.raises(ValueError, match=r"w: \(2,\) and \(3,\)"):
        average_weights(start, {**tuned, "w": torch.zeros(3)}, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        average_weights(start, tuned, 1.5)


def test_an_averaged_run_exports_and_runs_through_the_core(tmp_path, capsys):
    config = tiny_config("fast")
    start_run = untrained_run(config, tmp_path / "start", seed=0)
    tuned_run = untrained_run(config, tmp_path / "tuned", seed=1)
    start = start_run.weights_path("latest")
    out = tmp_path / "averaged"
    assert average_main([str(tuned_run.path), "--start", str(start), "--run-dir", str(out)]) == 0
    mixed, first, second = (load_file(str(p)) for p in (out / "checkpoints" / "best.safetensors", start,
                                                        tuned_run.weights_path("latest")))
    name = next(k for k in mixed if mixed[k].is_floating_point() and not torch.equal(first[k], second[k]))
    torch.testing.assert_close(mixed[name], (first[name] + second[name]) / 2)
    # an existing run folder is never overwritten; unreadable weights are a one-line error
    assert average_main([str(tuned_run.path), "--start", str(start), "--run-dir", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert average_main([str(tuned_run.path), "--start", str(tmp_path / "none.safetensors"),
                         "--run-dir", str(tmp_path / "other")]) == 2
    assert "cannot read weights" in capsys.readouterr().err and not (tmp_path / "other").exists()
    truncated = tmp_path / "truncated.safetensors"  # a damaged file, not a missing one
    truncated.write_bytes(start.read_bytes()[:1000])
    arguments = [str(tuned_run.path), "--start", str(truncated), "--run-dir", str(tmp_path / "other")]
    assert average_main(arguments) == 2
    assert "cannot read weights" in capsys.readouterr().err and not (tmp_path / "other").exists()

    onnx_path = export_run(out, tmp_path / "averaged.onnx")  # the core's contract, and torch's output
    assert read_model_info(onnx_path).name == "averaged"
    graph = build_graph(config).eval()
    load_weights(out / "checkpoints" / "best.safetensors", graph)
    inputs = example_inputs(graph, 32, 32, seed=2)
    with torch.no_grad():
        expected = [t.numpy() for t in graph(**inputs)]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    actual = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    for e, a in zip(expected, actual, strict=True):
        np.testing.assert_allclose(a, e, atol=1e-4, rtol=0)
