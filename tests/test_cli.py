"""``kprcan denoise`` on good and bad input: real files, real ONNX models, the real CLI in a subprocess."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import OpenEXR
import pytest
from cli_helpers import REPO, Run, assert_one_line_error, kprcan
from exr_fixtures import read_channels, synthetic_passes, write_blender_exr
from onnx_models import save_model


@pytest.fixture
def setup(tmp_path):
    models = tmp_path / "models"
    save_model(models, "guided", name="fast")
    save_model(models, "pooled", name="test-pooled")
    source = write_blender_exr(tmp_path / "in.exr", synthetic_passes(24, 40, seed=1))

    def run(*args, model_path=models):
        return kprcan(*args, home=tmp_path / "home", model_path=model_path)

    return tmp_path, source, run


def _no_output(folder, *names):
    for name in names:
        assert not (folder / name).exists()
    assert not list(folder.rglob("*.tmp"))


def test_denoise_writes_a_finite_output_with_all_channels(setup):
    tmp_path, source, run = setup
    result = run("denoise", source, "-o", tmp_path / "out.exr", "--model", "test-pooled", "--tile", "8")
    assert result.code == 0, result.stderr
    before, after = read_channels(source), read_channels(tmp_path / "out.exr")
    assert set(before) < set(after) and "ViewLayer.Denoised Diffuse.R" in after
    assert all(np.isfinite(plane).all() for plane in after.values())


def test_missing_file(setup):
    tmp_path, _source, run = setup
    result = run("denoise", tmp_path / "absent.exr", "-o", tmp_path / "o.exr")
    assert_one_line_error(result, 2, "absent.exr: no such file")
    _no_output(tmp_path, "o.exr")


def test_not_an_exr(setup):
    tmp_path, _source, run = setup
    (tmp_path / "photo.exr").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    assert_one_line_error(run("denoise", tmp_path / "photo.exr", "-o", tmp_path / "o.exr"), 2,
                          "not an OpenEXR file")
    _no_output(tmp_path, "o.exr")


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_truncated_or_corrupt_exr(setup, damage):
    tmp_path, _source, run = setup
    data = bytearray(write_blender_exr(tmp_path / "big.exr", synthetic_passes(96, 96)).read_bytes())
    if damage == "truncated":
        data = data[: len(data) * 2 // 3]
    else:  # scribble over compressed pixel data in the middle of the file
        middle = len(data) // 2
        data[middle:middle + 400] = b"\xa5" * 400
    (tmp_path / "bad.exr").write_bytes(bytes(data))
    assert_one_line_error(run("denoise", tmp_path / "bad.exr", "-o", tmp_path / "o.exr"), 2, "corrupt")
    _no_output(tmp_path, "o.exr")


def test_exr_without_the_needed_passes_names_them_and_the_blender_setting(setup):
    tmp_path, _source, run = setup
    passes = synthetic_passes(16, 16)
    for name in ("glossy_direct", "glossy_indirect", "denoising_albedo", "denoising_normal",
                 "denoising_depth"):
        del passes[name]
    thin = write_blender_exr(tmp_path / "thin.exr", passes)
    assert_one_line_error(run("denoise", thin, "-o", tmp_path / "o.exr"), 2,
                          "Glossy Direct (enable in View Layer Properties > Passes > Light > Glossy > "
                          "Direct, or view_layer.use_pass_glossy_direct = True)",
                          "Denoising Albedo, Denoising Normal, Denoising Depth (enable in View Layer "
                          "Properties > Passes > Data > Denoising Data, "
                          "or view_layer.cycles.denoising_store_passes = True)")
    _no_output(tmp_path, "o.exr")


def test_passes_of_different_sizes(setup):
    tmp_path, _source, run = setup
    passes = synthetic_passes(16, 16)
    channels = read_channels(write_blender_exr(tmp_path / "full.exr", passes))
    box = (np.array([0, 0], np.int32), np.array([15, 15], np.int32))
    small = (np.array([0, 0], np.int32), np.array([15, 7], np.int32))
    beauty = {k: v for k, v in channels.items() if ".DiffDir." not in k}
    diffuse = {k: v[:8] for k, v in channels.items() if ".DiffDir." in k}
    OpenEXR.File([OpenEXR.Part({"displayWindow": box, "dataWindow": box}, beauty, "main"),
                  OpenEXR.Part({"displayWindow": box, "dataWindow": small}, diffuse, "diffuse")]
                 ).write(str(tmp_path / "sizes.exr"))
    assert_one_line_error(run("denoise", tmp_path / "sizes.exr", "-o", tmp_path / "o.exr"), 2,
                          "different sizes", "DiffDir 16x8")
    _no_output(tmp_path, "o.exr")


def test_nan_and_inf_pixels_warn_and_give_a_finite_output(setup):
    tmp_path, _source, run = setup
    passes = synthetic_passes(16, 16)
    passes["diffuse_direct"][2, 3] = np.nan
    passes["combined"][4, 4, 0] = np.inf
    passes["emission"][1, 1, 1] = -np.inf  # read by the decomposition, carried through as it is
    dirty = write_blender_exr(tmp_path / "dirty.exr", passes)
    result = run("denoise", dirty, "-o", tmp_path / "o.exr")
    assert result.code == 0, result.stderr
    assert "kprcan: warning:" in result.stderr
    assert ("5 NaN/Inf values in passes the denoiser reads, made finite for it (Combined 1, "
            "Diffuse Direct 3, Emission 1)") in result.stderr
    after = read_channels(tmp_path / "o.exr")
    for written in ("Combined", "Denoised Diffuse", "Denoised Specular"):
        assert all(np.isfinite(after[f"ViewLayer.{written}.{c}"]).all() for c in "RGB"), written
    assert after["ViewLayer.Emit.G"][1, 1] == -np.inf and np.isnan(after["ViewLayer.DiffDir.R"][2, 3])
    assert after["ViewLayer.Noisy Image.R"][4, 4] == np.inf  # the noisy beauty, as rendered


def test_passes_carried_through_are_byte_identical(setup):
    """Only copies of what the networks read are sanitised: an +Inf background depth, NaN in a pass the
    networks never see and a broken normal are written back bit for bit."""
    tmp_path, _source, run = setup
    passes = synthetic_passes(16, 24)
    passes["depth"][:4] = np.inf  # the background, as some renderers write it
    passes["denoising_depth"][:4] = np.inf
    passes["normal"][5, 5] = np.nan
    passes["denoising_normal"][6, 6] = 1e6
    extra = {"ViewLayer.AO.R": np.full((16, 24), np.nan, np.float32)}
    source = write_blender_exr(tmp_path / "sky.exr", passes, extra=extra)
    result = run("denoise", source, "-o", tmp_path / "o.exr")
    assert result.code == 0, result.stderr
    before, after = read_channels(source), read_channels(tmp_path / "o.exr")
    assert after["ViewLayer.Depth.Z"][0, 0] == np.inf
    rewritten = {f"ViewLayer.Combined.{c}" for c in "RGBA"}
    for name, plane in before.items():
        if name not in rewritten:
            assert after[name].view(np.uint32).tolist() == plane.view(np.uint32).tolist(), name


def test_output_equal_to_input_is_refused(setup):
    tmp_path, source, run = setup
    original = source.read_bytes()
    for output in (source, tmp_path / "." / "in.exr"):
        assert_one_line_error(run("denoise", source, "-o", output, "--overwrite"), 2, "input")
    assert source.read_bytes() == original


def test_unwritable_output_folder(setup):
    tmp_path, source, run = setup
    (tmp_path / "a_file").write_text("a file, not a folder")
    result = run("denoise", source, "-o", tmp_path / "a_file" / "o.exr")
    assert_one_line_error(result, 2, "cannot write output")
    if os.geteuid() != 0:  # root ignores folder permissions
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert_one_line_error(run("denoise", source, "-o", locked / "o.exr"), 2, "cannot write output")
        _no_output(locked, "o.exr")


def test_model_that_is_not_onnx_or_lacks_metadata(setup):
    tmp_path, source, run = setup
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07 no graph here" * 10)
    assert_one_line_error(run("denoise", source, "-o", tmp_path / "o.exr", "--model", tmp_path / "junk.onnx"),
                          2, "not a valid ONNX model")
    bare = save_model(tmp_path, "guided", name="bare", format_version=None, required_passes=None)
    assert_one_line_error(run("denoise", source, "-o", tmp_path / "o.exr", "--model", bare), 2,
                          "lacks kprcan.format_version, kprcan.required_passes")
    _no_output(tmp_path, "o.exr")


def test_no_model_installed(setup):
    tmp_path, source, _run = setup
    # a copy of the package with no models/ beside it: what a bare `pip install` without models sees
    bare = tmp_path / "bare"
    shutil.copytree(REPO / "denoiser_core", bare / "denoiser_core",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=str(bare), KPRCAN_MODEL_PATH="")
    done = subprocess.run([sys.executable, "-m", "denoiser_core", "denoise", str(source), "-o",
                           str(tmp_path / "o.exr")], cwd=bare, env=env, capture_output=True, text=True)
    assert_one_line_error(Run(done.returncode, done.stdout, done.stderr), 2, "no models found")
    _no_output(tmp_path, "o.exr")


def test_usage_errors_are_one_line(setup):
    tmp_path, source, run = setup
    assert_one_line_error(run("denoise", source), 2, "-o/--output")
    assert_one_line_error(run("denoise", source, "-o", tmp_path / "o.exr", "--tile", "0"), 2, "--tile")
    for budget in ("0", "-1", "1e-12", "lots", "inf", "nan"):
        result = run("denoise", source, "-o", tmp_path / "o.exr", "--max-memory", budget)
        assert_one_line_error(result, 2, "--max-memory")
    result = run("denoise", source, "-o", tmp_path / "o.exr", "--device", "abacus")
    assert_one_line_error(result, 2, "--device")


def test_outputs_that_are_not_regular_files_are_refused_before_any_work(setup):
    """A FIFO, a device or a socket at the output path (directly or through a symlink) is refused with
    exit 2 even with --overwrite, and left as it is: it was once replaced by a regular file."""
    tmp_path, source, run = setup
    fifo = tmp_path / "fifo.exr"
    os.mkfifo(fifo)
    (tmp_path / "to_fifo.exr").symlink_to(fifo)
    (tmp_path / "to_null.exr").symlink_to(os.devnull)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "socket.exr"))
    cases = {"fifo.exr": "is a FIFO", "to_fifo.exr": "is a FIFO", "to_null.exr": "is a character device",
             "socket.exr": "is a socket"}
    try:
        for name, kind in cases.items():
            for overwrite in ((), ("--overwrite",)):
                # a model that does not exist: the output check comes first, before any model is loaded
                result = run("denoise", source, "-o", tmp_path / name, *overwrite, "--model", "absent")
                assert_one_line_error(result, 2, f"{name}: {kind}", "regular file")
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)
        assert stat.S_ISSOCK(os.stat(tmp_path / "socket.exr").st_mode)
        assert os.path.islink(tmp_path / "to_null.exr") and os.path.islink(tmp_path / "to_fifo.exr")
        assert not list(tmp_path.glob(".*.tmp"))
    finally:
        server.close()
    system = Path("/dev") / f"kprcan-test-{os.getpid()}.exr"
    try:
        assert_one_line_error(run("denoise", source, "-o", system, "--overwrite"), 2,
                              "is in the system folder /dev")
        assert not system.exists() and not list(Path("/dev").glob(f".{system.name}.*"))
    finally:
        system.unlink(missing_ok=True)


@pytest.mark.parametrize("shape, problem", [
    (["N", 4, "H", "W"], "graph input 'normal' has 4 channels"),
    (["N", "H", "W"], "graph input 'normal' has rank 3"),
])
def test_a_model_with_wrong_input_shapes_is_refused_at_load(setup, shape, problem):
    tmp_path, source, run = setup
    model = save_model(tmp_path / "bad", "guided", name="misshapen", input_shapes={"normal": shape})
    result = run("denoise", source, "-o", tmp_path / "o.exr", "--model", model)
    assert_one_line_error(result, 2, "misshapen.onnx", problem,
                          "the model contract needs float32 (N, 3, H, W)")
    _no_output(tmp_path, "o.exr")


def test_a_model_that_outputs_nan_fails_naming_it(setup):
    tmp_path, source, run = setup
    model = save_model(tmp_path / "bad", "nan", name="broken-net")
    result = run("denoise", source, "-o", tmp_path / "o.exr", "--model", model)
    assert_one_line_error(result, 1, "model 'broken-net'", "is broken: it output", "NaN/Inf")
    _no_output(tmp_path, "o.exr")


def test_out_of_memory_hints_fit_the_cause(setup):
    """A size_multiple that pads the image beyond any memory is not helped by --tile, and the hint says
    so; an allocation onnxruntime refuses inside windows a smaller tile would shrink suggests --tile."""
    tmp_path, source, run = setup
    padded = save_model(tmp_path / "bad", "identity", name="padded", size_multiple=str(1 << 20))
    result = run("denoise", source, "-o", tmp_path / "o.exr", "--model", padded, "--tile", "8")
    line = assert_one_line_error(result, 1, "out of memory", "size_multiple 1048576 pads the 40x24 image to "
                                 "1048576x1048576", "a smaller --tile cannot help")
    assert "try a smaller --tile" not in line
    greedy = save_model(tmp_path / "bad", "greedy", name="greedy")
    result = run("denoise", source, "-o", tmp_path / "o.exr", "--model", greedy, "--tile", "16")
    assert_one_line_error(result, 1, "out of memory running model 'greedy' on 14x12 px windows",
                          "try a smaller --tile (this run used 16)")
    result = run("denoise", source, "-o", tmp_path / "o.exr", "--model", greedy, "--tile", "1")
    assert_one_line_error(result, 1, "needs windows of at least 1x1 px", "a smaller --tile cannot help")
    _no_output(tmp_path, "o.exr")
