"""Cancelling ``kprcan denoise`` mid-frame with real signals, as a render farm does, and resuming."""

from __future__ import annotations

import signal
import time

import pytest
from cli_helpers import finish, kprcan, start_kprcan
from exr_fixtures import read_channels, synthetic_passes, write_blender_exr
from onnx_models import save_model

from denoiser_core.claims import marker_for


@pytest.fixture
def slow_frame(tmp_path):
    models = tmp_path / "models"
    save_model(models, "slow", name="fast")
    source = write_blender_exr(tmp_path / "frame.exr", synthetic_passes(320, 320))
    return tmp_path, source, models


def _start_and_wait_for_work(tmp_path, source, models, output):
    """A worker denoising ``source`` in small tiles, returned once it works on the frame (its temp file
    exists: the input is being read or denoised)."""
    worker = start_kprcan("denoise", source, "-o", output, "--tile", "32", home=tmp_path / "home",
                          model_path=models)
    deadline = time.monotonic() + 120
    while not list(output.parent.glob(f".{output.name}.*.tmp")):
        assert worker.poll() is None, finish(worker).stderr
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return worker


@pytest.mark.parametrize("number, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_mid_frame_clean_up_and_exit_143_and_130(slow_frame, number, code):
    tmp_path, source, models = slow_frame
    output = tmp_path / "out" / "clean.exr"
    worker = _start_and_wait_for_work(tmp_path, source, models, output)
    worker.send_signal(number)
    run = finish(worker)
    assert run.code == code, run.stderr
    assert run.stderr.strip().endswith("terminated (SIGTERM)" if number == signal.SIGTERM else "interrupted")
    assert list(output.parent.iterdir()) == []  # no output, no temp file, no claim


def test_a_run_killed_mid_frame_leaves_leftovers_the_next_run_removes(slow_frame):
    tmp_path, source, models = slow_frame
    output = tmp_path / "out" / "clean.exr"
    worker = _start_and_wait_for_work(tmp_path, source, models, output)
    worker.send_signal(signal.SIGKILL)  # no chance to clean up
    worker.wait()
    temps = list(output.parent.glob(".clean.exr.*.tmp"))
    assert len(temps) == 1 and not output.exists()
    claimed = marker_for(output).exists()
    rerun = kprcan("denoise", source, "-o", output, home=tmp_path / "home", model_path=models)
    assert rerun.code == 0, rerun.stderr
    assert sorted(p.name for p in output.parent.iterdir()) == ["clean.exr"]  # no temp file, no claim
    assert "ViewLayer.Denoised Diffuse.R" in read_channels(output)
    assert f"removing {temps[0]}, left by a run that was stopped" in rerun.stderr
    assert claimed and "taking over the claim of a worker that is gone" in rerun.stderr
