"""Several ``kprcan denoise`` workers on one sequence, as a render farm starts them: real processes."""

from __future__ import annotations

import re
import time

import pytest
from cli_helpers import finish, kprcan, start_kprcan
from exr_fixtures import read_channels, synthetic_passes, write_blender_exr
from onnx_models import save_model

from denoiser_core.claims import claim


@pytest.fixture
def farm(tmp_path):
    models = tmp_path / "models"
    save_model(models, "slow", name="fast")  # slow enough that workers meet mid-frame
    return tmp_path, models


def _sequence(folder, frames: int, size: int) -> str:
    for frame in range(1, frames + 1):
        passes = synthetic_passes(size, size, seed=frame)
        write_blender_exr(folder / "render" / f"shot_{frame:04d}.exr", passes)
    return str(folder / "render" / "shot_####.exr")


def _written(stderr: str) -> list[str]:
    """Outputs a worker reports writing (its ``input -> output (seconds)`` lines)."""
    return re.findall(r" -> (\S+) \(\d", stderr)


def test_two_workers_share_a_sequence_each_frame_written_once(farm):
    tmp_path, models = farm
    pattern = _sequence(tmp_path, 8, 160)
    outputs = str(tmp_path / "out" / "den_####.exr")
    workers = [start_kprcan("denoise", pattern, "-o", outputs, home=tmp_path / "home", model_path=models)
               for _ in range(2)]
    runs = [finish(worker) for worker in workers]
    for run in runs:
        assert run.code == 0, run.stderr
    written = _written(runs[0].stderr) + _written(runs[1].stderr)
    expected = [str(tmp_path / "out" / f"den_{frame:04d}.exr") for frame in range(1, 9)]
    assert sorted(written) == expected  # every frame once, by one worker or the other
    assert all(_written(run.stderr) for run in runs), [run.stderr for run in runs]  # both did work
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"den_{f:04d}.exr" for f in range(1, 9)]


def test_a_worker_waits_for_a_frame_another_worker_holds_and_exits_0_when_it_is_done(farm):
    tmp_path, models = farm
    pattern = _sequence(tmp_path, 3, 32)
    out = tmp_path / "out"
    held = claim(out / "den_0002.exr")  # this test is the other worker
    assert held is not None
    try:
        worker = start_kprcan("denoise", pattern, "-o", f"{out}/den_####.exr", home=tmp_path / "home",
                              model_path=models)
        deadline = time.monotonic() + 120
        while not ((out / "den_0001.exr").exists() and (out / "den_0003.exr").exists()):
            assert worker.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        assert worker.poll() is None  # waiting for frame 2, not finished and not failed
        other = kprcan("denoise", tmp_path / "render" / "shot_0002.exr", "-o", out / "elsewhere.exr",
                       home=tmp_path / "home", model_path=models)
        assert other.code == 0, other.stderr
        (out / "elsewhere.exr").rename(out / "den_0002.exr")  # "our" worker finished frame 2
    finally:
        held.release()
    run = finish(worker)
    assert run.code == 0, run.stderr
    assert "waiting for 1 frame(s) other workers are denoising" in run.stderr
    assert "1 of 3 frames were denoised by other workers" in run.stderr
    assert sorted(_written(run.stderr)) == [str(out / "den_0001.exr"), str(out / "den_0003.exr")]
    assert "ViewLayer.Noisy Image.R" in read_channels(out / "den_0002.exr")
    assert sorted(p.name for p in out.iterdir()) == ["den_0001.exr", "den_0002.exr", "den_0003.exr"]
