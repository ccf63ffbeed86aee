"""The add-on's worker process (blender_addon/worker.py, no bpy): denoiser_core runs there, never inside
Blender. Real processes, real EXRs, a real ONNX model: probe, denoise, errors, cancel, a dying worker.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from addon_harness import REPO
from exr_fixtures import mirror_tiled_render, synthetic_passes, write_blender_exr
from onnx_models import save_model

from denoiser_core import load_model, read_exr
from denoiser_core.shot import denoise_shot

_spec = importlib.util.spec_from_file_location("kprcan_addon_worker", REPO / "blender_addon" / "worker.py")
worker_module = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker_module)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("models"), "guided")


@pytest.fixture
def worker():
    started = worker_module.Worker(sys.executable)
    yield started
    started.stop()


def render_with_composite_layer(path, size=(48, 64)):
    """A render as Blender writes it with compositing on: the view layer's passes plus a Composite layer
    holding only the (noisy) composited image."""
    passes = synthetic_passes(*size)
    composite = {f"Composite.Combined.{c}": np.ascontiguousarray(passes["combined"][..., i])
                 for i, c in enumerate("RGBA")}
    return write_blender_exr(path, passes, extra=composite)


def test_probe_says_what_runs_here_and_why_not(worker):
    devices = worker.request("probe")["devices"]
    assert devices["cpu"] == [True, ""]
    for name, (usable, reason) in devices.items():
        assert usable == (reason == ""), (name, reason)


def test_denoise_drops_the_compositor_layer_quietly(worker, model, tmp_path, capfd):
    source = render_with_composite_layer(tmp_path / "frame.exr")
    assert read_exr(source).layers == ["Composite", "ViewLayer"]
    fractions = []
    ran = worker.request("denoise", fractions.append, input=str(source), output=str(tmp_path / "out.exr"),
                         model=str(model), device="cpu", tile=0, drop_layers=["Composite"])
    assert (ran["device"], ran["fallback"], ran["model"]) == ("cpu", "", "guided")
    result = read_exr(tmp_path / "out.exr")
    assert result.layers == ["ViewLayer"]
    assert {"Combined", "Noisy Image", "Denoised Diffuse"} <= set(result.layer_passes("ViewLayer"))
    assert fractions and fractions[-1] == pytest.approx(1.0)
    assert "Composite" not in capfd.readouterr().err  # no "view layer 'Composite' lacks passes" warning


def test_user_errors_are_one_line_and_the_worker_carries_on(worker, model, tmp_path):
    with pytest.raises(worker_module.WorkerError) as caught:
        worker.request("denoise", input=str(tmp_path / "missing.exr"), output=str(tmp_path / "out.exr"),
                       model=str(model), device="cpu")
    assert caught.value.exit_code == 2 and "missing.exr" in str(caught.value)
    assert "\n" not in str(caught.value)
    with pytest.raises(worker_module.WorkerError, match="model file not found"):
        worker.request("load", model=str(tmp_path / "absent.onnx"), device="cpu")
    assert worker.request("load", model=str(model), device="cpu")["device"] == "cpu"


def test_cancel_stops_mid_image_and_leaves_no_file(worker, model, tmp_path):
    source = render_with_composite_layer(tmp_path / "frame.exr", size=(256, 256))
    seen = []
    with pytest.raises(worker_module.Cancelled):
        worker.request("denoise", seen.append, lambda: bool(seen), input=str(source),
                       output=str(tmp_path / "out.exr"), model=str(model), device="cpu", tile=64)
    assert seen and seen[-1] < 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frame.exr"]  # no output, no temp file
    worker.request("denoise", input=str(source), output=str(tmp_path / "out.exr"), model=str(model),
                   device="cpu", tile=0)
    assert (tmp_path / "out.exr").is_file()


def test_temporal_shot_stops_on_cancel_and_resumes_from_the_finished_frames(worker, model, tmp_path):
    """The ``shot`` request (temporal mode: denoiser_core.shot) cancelled during frame 2 keeps frame 1, leaves
    no file for frame 2 and no claim or temp file; the next request writes frame 2 from frame 1's history,
    as one uninterrupted shot does."""
    frames = []
    for number in (1, 2):
        passes = synthetic_passes(256, 256, seed=number)
        passes["vector"] = np.zeros((256, 256, 4), np.float32)  # a still camera: all history applies
        frames.append((number, write_blender_exr(tmp_path / "in" / f"f_{number}.exr", passes),
                       tmp_path / "out" / f"f_{number}.exr"))
    request = dict(frames=[[n, str(source), str(target)] for n, source, target in frames], model=str(model),
                   device="cpu", tile=64)
    seen = []
    with pytest.raises(worker_module.Cancelled):
        worker.request("shot", seen.append, lambda: bool(seen) and seen[-1] > 0.5, **request)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f_1.exr"]
    assert worker.request("shot", **request)["written"] == 1
    uninterrupted = [(n, source, tmp_path / "whole" / target.name) for n, source, target in frames]
    denoise_shot(uninterrupted, load_model(model, "cpu"))
    for (_n, _source, resumed), (_m, _same, whole) in zip(frames, uninterrupted, strict=True):
        assert read_exr(resumed).find("ViewLayer", "Temporal History") is not None
        for name in ("Combined", "Temporal History"):
            np.testing.assert_array_equal(read_exr(resumed).find("ViewLayer", name).pixels,
                                          read_exr(whole).find("ViewLayer", name).pixels)


def test_a_worker_that_dies_is_reported_and_replaced(worker, model, tmp_path):
    source = render_with_composite_layer(tmp_path / "frame.exr", size=(256, 256))
    with pytest.raises(worker_module.WorkerError, match="ended unexpectedly"):
        worker.request("denoise", lambda fraction: worker._process.kill(), input=str(source),
                       output=str(tmp_path / "out.exr"), model=str(model), device="cpu", tile=64)
    assert not worker.running
    assert worker.request("load", model=str(model), device="cpu")["model"] == "guided"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc, glibc's malloc_trim")
def test_an_idle_worker_holds_its_model_not_the_last_frames_buffers(worker, tmp_path):
    """Blender keeps the worker between renders: after a frame its freed buffers go back to the system."""
    source = mirror_tiled_render(1280, 720, tmp_path / "frame.exr")
    worker.request("denoise", input=str(source), output=str(tmp_path / "out.exr"), model="fast", device="cpu",
                   tile=0)
    status = dict(line.split(":", 1) for line in
                  Path(f"/proc/{worker._process.pid}/status").read_text().splitlines())
    resident, peak = (int(status[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM"))
    assert peak - resident > 500 * 2**20, f"resident {resident / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB"


def test_worker_import_path_leaves_out_the_standard_library():
    import sysconfig

    path = worker_module.import_path()
    assert path[0] == str(REPO)  # a checkout: the top-level denoiser_core
    assert sysconfig.get_paths()["stdlib"] not in path
    assert not any(entry.endswith(".zip") for entry in path)
