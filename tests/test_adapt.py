"""training/adapt.py: a config's network holding a related design's weights, exported like any run."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import torch
from safetensors.torch import load_file

from tests.training_helpers import tiny_config, untrained_run
from training.adapt import main as adapt_main
from training.checkpoint import load_weights
from training.config import config_from_dict
from training.export import export_run
from training.graph import build_graph, example_inputs


def test_smaller_colour_kernels_take_the_central_taps_and_the_run_exports(tmp_path, capsys):
    five = tiny_config("fast", ["graph.denoise_diffuse_color=true", "model.predict_kernel=5"])
    start = untrained_run(five, tmp_path / "start", seed=3).weights_path("latest")
    design = tmp_path / "colour3.yaml"  # JSON is YAML: the 5x5 design with 3x3 colour kernels at level 0
    colour3 = {**five.model, "extra_signal_kernel": [3, 5, 5]}
    design.write_text(json.dumps({**five.to_dict(), "model": colour3}))
    out = tmp_path / "adapted"
    assert adapt_main(["--config", str(design), "--init", str(start), "--run-dir", str(out)]) == 0

    stored, adapted = load_file(str(start)), load_file(str(out / "checkpoints" / "best.safetensors"))
    head = "nets.diffuse.heads.0.weight"
    central = [row for row in range(25) if 1 <= row // 5 <= 3 and 1 <= row % 5 <= 3]
    light_rows, colour_rows = list(range(26)), [26 + tap for tap in central] + [26 + 25]
    assert adapted[head].shape[0] == 26 + 10  # the light's 5x5 and blend weight, the colour's 3x3 and blend
    assert torch.equal(adapted[head], stored[head][light_rows + colour_rows])
    assert torch.equal(adapted["nets.diffuse.heads.1.weight"], stored["nets.diffuse.heads.1.weight"])

    onnx_path = export_run(out, tmp_path / "adapted.onnx")  # exported like any run, same output as torch
    graph = build_graph(config_from_dict(json.loads(design.read_text()))).eval()
    load_weights(out / "checkpoints" / "best.safetensors", graph)
    inputs = example_inputs(graph, 32, 48, seed=1)
    with torch.no_grad():
        expected = [t.numpy() for t in graph(**inputs)]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for e, a in zip(expected, session.run(None, {k: v.numpy() for k, v in inputs.items()}), strict=True):
        np.testing.assert_allclose(a, e, atol=1e-4, rtol=0)

    # an existing run folder is never overwritten; weights of another design are a one-line error
    assert adapt_main(["--config", str(design), "--init", str(start), "--run-dir", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    other = untrained_run(tiny_config("kpcn"), tmp_path / "kpcn").weights_path("latest")
    assert adapt_main(["--config", str(design), "--init", str(other), "--run-dir", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("adapt: error:") and "does not fit" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "x" / "config.json").exists()
