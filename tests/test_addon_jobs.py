"""The add-on's background job runner (blender_addon/jobs.py, no bpy) with a real model and real renders:
progress, items arriving while it runs, cancel, and errors that reach the user.
"""

from __future__ import annotations

import importlib.util
import sys
import time

import pytest
from addon_harness import REPO
from onnx_models import save_model

from denoiser_core import DenoiserError, denoise_file, load_model, read_exr

_spec = importlib.util.spec_from_file_location("kprcan_addon_jobs", REPO / "blender_addon" / "jobs.py")
jobs = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(jobs)


@pytest.fixture(scope="module")
def denoiser(tmp_path_factory):
    return load_model(save_model(tmp_path_factory.mktemp("models"), "guided"), "cpu")


def make_work(denoiser, tile=512, on_progress=None):
    def work(item, progress, cancelled):
        source, target = item

        def report(fraction):
            progress(fraction)
            if on_progress is not None:
                on_progress(fraction)

        return denoise_file(source, target, model=denoiser, tile=tile, progress=report, cancel=cancelled)
    return work


def wait_finished(job, timeout=60.0):
    seen = []
    deadline = time.monotonic() + timeout
    while not job.finished:
        assert time.monotonic() < deadline, "job did not finish"
        seen.append(job.state().fraction)
        time.sleep(0.005)
    return seen


def test_thread_denoises_items_added_while_running(cycles_exr, denoiser, tmp_path):
    job = jobs.Job("frames", make_work(denoiser, tile=16), (DenoiserError,)).start()
    job.add((cycles_exr, tmp_path / "a.exr"))
    time.sleep(0.2)  # the worker waits for more until close()
    assert job.running and not job.finished
    job.add((cycles_exr, tmp_path / "b.exr"))
    job.close()
    fractions = wait_finished(job)
    state = job.state()
    assert (state.done, state.total, state.errors, state.cancelled) == (2, 2, [], False)
    assert state.results == [tmp_path / "a.exr", tmp_path / "b.exr"]
    assert fractions == sorted(fractions) and state.fraction == 1.0
    assert "Denoised Diffuse" in {p.name for p in read_exr(tmp_path / "b.exr").passes}
    with pytest.raises(RuntimeError, match="closed"):
        job.add((cycles_exr, tmp_path / "c.exr"))


def test_cancel_stops_mid_image_and_leaves_no_output(cycles_exr, denoiser, tmp_path):
    holder = {}
    job = jobs.Job("render", make_work(denoiser, tile=8, on_progress=lambda f: holder["job"].cancel()),
                   (DenoiserError,))
    holder["job"] = job
    job.add((cycles_exr, tmp_path / "cancelled.exr"))
    job.add((cycles_exr, tmp_path / "never.exr"))
    job.start()
    wait_finished(job)
    state = job.state()
    assert state.cancelled and state.errors == ["cancelled"] and state.done == 1
    assert list(tmp_path.iterdir()) == []  # neither output, no temp file


def test_errors_are_kept_for_the_user_and_later_items_still_run(cycles_exr, denoiser, tmp_path, capsys):
    job = jobs.Job("frames", make_work(denoiser), (DenoiserError,))
    job.add((tmp_path / "missing.exr", tmp_path / "x.exr"))
    job.add((cycles_exr, tmp_path / "ok.exr"))
    job.run_inline()
    state = job.state()
    assert job.finished and state.done == 2 and state.results == [tmp_path / "ok.exr"]
    assert state.errors == [f"{tmp_path / 'missing.exr'}: no such file"]
    assert "Traceback" not in capsys.readouterr().err  # an expected, user-facing error: no traceback


def test_unexpected_errors_print_a_traceback(tmp_path, capsys):
    job = jobs.Job("bug", lambda item, progress, cancelled: 1 / 0, (DenoiserError,))
    job.add(None)
    job.run_inline()
    assert job.state().errors == ["division by zero"]
    assert "ZeroDivisionError" in capsys.readouterr().err
