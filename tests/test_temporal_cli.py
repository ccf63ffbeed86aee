"""``kprcan denoise --temporal`` on a real rendered shot (a sphere moving across a textured wall, with the
Vector pass): resumed and two-worker runs write the same frames as one uninterrupted run."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import REPO, assert_one_line_error, kprcan
from exr_fixtures import read_channels

from training.datagen.sequences import render_shot

pytestmark = pytest.mark.slow  # renders the shot with bpy on first use (then cached)


@pytest.fixture(scope="module")
def shot(request, tmp_path_factory):
    """The moving-sphere shot's noisy frames copied as shot_0001.exr ... (6 frames)."""
    paths = render_shot("moving", request.config.rootpath / ".cache" / "test_renders" / "sequences")
    folder = tmp_path_factory.mktemp("shot")
    for number, path in enumerate(paths["noisy"], start=1):
        shutil.copy(path, folder / f"shot_{number:04d}.exr")
    return folder


def _temporal(shot, out, home, *extra):
    return kprcan("denoise", "--temporal", shot / "shot_####.exr", "-o", out / "den_####.exr", "-q", *extra,
                  home=home)


@pytest.fixture(scope="module")
def uninterrupted(shot, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    run = _temporal(shot, out, out)
    assert run.code == 0, run.stderr
    frames = {path.name: read_channels(path) for path in sorted(out.glob("den_*.exr"))}
    return frames, out


def _assert_same_frames(out, expected):
    written = sorted(out.glob("den_*.exr"))
    assert [p.name for p in written] == sorted(expected)
    for path in written:
        channels = read_channels(path)
        assert set(channels) == set(expected[path.name])
        for name, pixels in channels.items():
            np.testing.assert_array_equal(pixels, expected[path.name][name], err_msg=f"{path.name} {name}")


def test_temporal_output_holds_history_and_starts_as_the_per_frame_result(shot, uninterrupted, tmp_path):
    uninterrupted, _folder = uninterrupted
    first = uninterrupted["den_0001.exr"]
    assert "ViewLayer.Temporal History.N" in first
    assert np.all(first["ViewLayer.Temporal History.N"] == 1.0)  # nothing to blend with yet
    assert uninterrupted["den_0006.exr"]["ViewLayer.Temporal History.N"].max() == 6.0
    single = tmp_path / "single.exr"
    run = kprcan("denoise", shot / "shot_0001.exr", "-o", single, "-q", home=tmp_path)
    assert run.code == 0, run.stderr
    per_frame = read_channels(single)
    for channel in "RGBA":
        np.testing.assert_array_equal(first[f"ViewLayer.Combined.{channel}"],
                                      per_frame[f"ViewLayer.Combined.{channel}"])
    later = uninterrupted["den_0004.exr"]["ViewLayer.Combined.R"]
    assert np.abs(later - uninterrupted["den_0004.exr"]["ViewLayer.Noisy Image.R"]).max() > 0


def test_resumed_run_writes_the_same_frames(shot, uninterrupted, tmp_path):
    expected, folder = uninterrupted
    out = tmp_path / "out"
    out.mkdir()
    for name in ("den_0001.exr", "den_0002.exr", "den_0003.exr"):  # what a run stopped after frame 3 left
        shutil.copy(folder / name, out / name)
    run = _temporal(shot, out, tmp_path)
    assert run.code == 0, run.stderr
    _assert_same_frames(out, expected)


def test_two_workers_on_one_shot_write_the_same_frames(shot, uninterrupted, tmp_path):
    expected, _folder = uninterrupted
    out = tmp_path / "out"
    command = [sys.executable, "-m", "denoiser_core", "denoise", "--temporal", str(shot / "shot_####.exr"),
               "-o", str(out / "den_####.exr"), "-q"]
    env = {"HOME": str(tmp_path), "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    workers = [subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
               for _worker in range(2)]
    for worker in workers:
        _out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    _assert_same_frames(out, expected)
    assert not list(out.glob(".*")), "claims and temporaries are cleaned up"


def test_temporal_mode_refuses_frames_without_the_vector_pass(cycles_exr, tmp_path):
    shutil.copy(cycles_exr, tmp_path / "still_0001.exr")
    run = kprcan("denoise", "--temporal", tmp_path / "still_####.exr", "-o", tmp_path / "out_####.exr",
                 home=tmp_path)
    assert_one_line_error(run, 2, "Vector", "Motion Blur off")
    assert not (tmp_path / "out_0001.exr").exists()


def test_temporal_mode_needs_a_sequence(shot, tmp_path):
    run = kprcan("denoise", "--temporal", shot / "shot_0001.exr", "-o", tmp_path / "x.exr", home=tmp_path)
    assert_one_line_error(run, 2, "--temporal", "####")


def test_a_layer_without_passes_does_not_need_the_vector_pass(shot, tmp_path):
    """Frames rendered with compositing on hold a 'Composite' layer (Combined only) beside the view
    layer: only the layers that are denoised need the Vector pass."""
    from denoiser_core.exr import read_exr, write_exr

    folder = tmp_path / "composited"
    folder.mkdir()
    for path in sorted(shot.glob("shot_*.exr"))[:2]:
        image = read_exr(path)
        combined = image.find("ViewLayer", "Combined")
        image.set_pass("Composite", "Combined", combined.components, combined.hwc.copy(), combined.part)
        write_exr(image, folder / path.name)
    assert read_exr(folder / "shot_0001.exr").layers[0] == "Composite"
    run = _temporal(folder, tmp_path / "out", tmp_path)
    assert run.code == 0, run.stderr
    assert len(list((tmp_path / "out").glob("den_*.exr"))) == 2


def test_a_worker_that_waited_does_not_redo_the_shot_with_overwrite(shot, uninterrupted, tmp_path):
    """A farm worker started with --overwrite while another holds the shot waits, then counts the shot
    done by that worker (it writes nothing), as per-frame workers do. The test holds the claim itself."""
    import time

    from denoiser_core.claims import claim
    from denoiser_core.shot import shot_marker_for

    expected, folder = uninterrupted
    out = tmp_path / "out"
    shutil.copytree(folder, out)
    held = claim(shot_marker_for(out / "den_0001.exr"))
    assert held is not None
    command = [sys.executable, "-m", "denoiser_core", "denoise", "--temporal", "--overwrite",
               str(shot / "shot_####.exr"), "-o", str(out / "den_####.exr")]
    env = {"HOME": str(tmp_path), "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    worker = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(4)  # the worker finds the shot held and waits
    assert worker.poll() is None
    held.release()
    _out, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err
    assert "waiting for it" in err and "0 of 6 frames denoised in temporal mode" in err, err
    _assert_same_frames(out, expected)
