"""Sequences with resume, ``info``, ``models`` and ``demo`` through the real command line."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, kprcan
from exr_fixtures import read_channels, synthetic_passes, write_blender_exr
from onnx_models import save_model


@pytest.fixture
def env(tmp_path):
    models = tmp_path / "models"
    save_model(models, "guided", name="fast")
    save_model(models, "pooled", name="test-pooled")

    def run(*args):
        return kprcan(*args, home=tmp_path / "home", model_path=models)

    return tmp_path, run


def test_sequence_resumes_and_skips_done_frames(env):
    tmp_path, run = env
    for frame in (1, 2, 3):
        write_blender_exr(tmp_path / "render" / f"shot_{frame:04d}.exr", synthetic_passes(16, 24, seed=frame))
    # too few digits for ####: not a frame of this sequence
    write_blender_exr(tmp_path / "render" / "shot_12.exr", synthetic_passes(8, 8))
    pattern, outputs = tmp_path / "render" / "shot_####.exr", tmp_path / "out" / "den_#####.exr"
    first = run("denoise", pattern, "-o", outputs, "-q")
    assert first.code == 0 and first.stderr == "", first.stderr
    done = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert done == ["den_00001.exr", "den_00002.exr", "den_00003.exr"]

    (tmp_path / "out" / "den_00001.exr").write_bytes(b"finished earlier")  # marks a frame as done
    (tmp_path / "out" / "den_00003.exr").unlink()  # the batch was killed before frame 3
    stamp = (tmp_path / "out" / "den_00002.exr").stat().st_mtime_ns
    second = run("denoise", pattern, "-o", outputs)
    assert second.code == 0, second.stderr
    assert "skipping 2 of 3 frames" in second.stderr
    assert (tmp_path / "out" / "den_00001.exr").read_bytes() == b"finished earlier"
    assert (tmp_path / "out" / "den_00002.exr").stat().st_mtime_ns == stamp
    assert "ViewLayer.Noisy Image.R" in read_channels(tmp_path / "out" / "den_00003.exr")

    third = run("denoise", pattern, "-o", outputs, "--overwrite", "-q")
    assert third.code == 0 and (tmp_path / "out" / "den_00001.exr").read_bytes()[:4] == b"\x76\x2f\x31\x01"


def test_several_inputs_into_a_folder_and_bad_output_forms(env):
    tmp_path, run = env
    inputs = [write_blender_exr(tmp_path / f"{name}.exr", synthetic_passes(8, 8)) for name in ("a", "b")]
    result = run("denoise", *inputs, "-o", f"{tmp_path / 'outdir'}/", "-q")
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "outdir").iterdir()) == ["a.exr", "b.exr"]
    assert_one_line_error(run("denoise", *inputs, "-o", tmp_path / "one.exr"), 2, "need an output folder")
    assert_one_line_error(run("denoise", tmp_path / "x_####.exr", "-o", tmp_path / "o_####.exr"), 2,
                          "no files match")
    write_blender_exr(tmp_path / "seq_0001.exr", synthetic_passes(8, 8))
    assert_one_line_error(run("denoise", tmp_path / "seq_####.exr", "-o", tmp_path / "o_##_v##.exr"), 2,
                          "o_##_v##.exr: use one run of # for the frame number")
    assert not list(tmp_path.glob("o_*"))
    assert not (tmp_path / "one.exr").exists()


def test_a_bad_frame_does_not_stop_the_batch(env):
    tmp_path, run = env
    write_blender_exr(tmp_path / "s_0001.exr", synthetic_passes(8, 8))
    good = write_blender_exr(tmp_path / "s_0002.exr", synthetic_passes(8, 8)).read_bytes()
    (tmp_path / "s_0002.exr").write_bytes(good[: len(good) // 2])
    write_blender_exr(tmp_path / "s_0003.exr", synthetic_passes(8, 8))
    result = run("denoise", tmp_path / "s_####.exr", "-o", f"{tmp_path / 'o'}/", "-q")
    assert result.code == 2 and "s_0002.exr: truncated or corrupt" in result.stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["s_0001.exr", "s_0003.exr"]


def test_info_lists_layers_passes_and_what_each_model_misses(env):
    tmp_path, run = env
    passes = synthetic_passes(12, 20)
    del passes["transmission_color"]
    source = write_blender_exr(tmp_path / "r.exr", passes, layers=("ViewLayer", "Layer.001"), blender_major=5)
    result = run("info", source)
    assert result.code == 0, result.stderr
    out = result.stdout
    assert "20x12" in out and "view layer 'Layer.001':" in out
    assert "Diffuse Direct" in out and "-> diffuse_direct" in out and "XYZ   -> denoising_normal" in out
    assert "model fast" in out and "model test-pooled" in out
    assert ("missing Transmission Color (enable in View Layer Properties > Passes > Light > Transmission > "
            "Color, or view_layer.use_pass_transmission_color = True)") in out
    complete = run("info", write_blender_exr(tmp_path / "ok.exr", synthetic_passes(8, 8)), "--model", "fast")
    assert "view layer 'ViewLayer': ready" in complete.stdout and "test-pooled" not in complete.stdout
    save_model(tmp_path / "models", "variance", name="test-variance")  # denoise would refuse it
    variance = run("info", tmp_path / "ok.exr", "--model", "test-variance")
    assert variance.code == 0, variance.stderr
    assert "not usable on Blender renders: it needs diffuse_variance" in variance.stdout
    assert "ready" not in variance.stdout


def test_models_lists_installed_models(env):
    _tmp_path, run = env
    result = run("models")
    assert result.code == 0, result.stderr
    assert "devices: cpu" in result.stdout
    assert "fast (test-filter, 0 parameters, context 2 px, size multiple 1)" in result.stdout
    assert "test-pooled (test-filter" in result.stdout and "needs: combined, diffuse_direct" in result.stdout


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4:idat])[0]
    assert zlib.crc32(data[idat:idat + 4 + length]) == struct.unpack(">I", data[idat + 4 + length:][:4])[0]
    rows = zlib.decompress(data[idat + 4:idat + 4 + length])
    assert len(rows) == height * (1 + 3 * width)
    return width, height


def test_demo_denoises_the_examples_and_reports_psnr(env):
    tmp_path, run = env
    examples = tmp_path / "examples"
    assert_one_line_error(run("demo", "--examples", examples), 2, "noisy.exr not found")
    noisy = synthetic_passes(32, 48, seed=4, noise=0.6)
    write_blender_exr(examples / "noisy.exr", noisy)
    clean = synthetic_passes(32, 48, seed=4, noise=0)
    write_blender_exr(examples / "reference.exr", {"combined": clean["combined"]})
    result = run("demo", "--examples", examples, "-q")
    assert result.code == 0, result.stderr
    psnr = [float(x.split()[0]) for x in result.stdout.split("noisy ")[1].split("denoised ")]
    assert psnr[1] > psnr[0] + 1.0, result.stdout  # the test filter does remove noise
    assert _png_size((examples / "out" / "side_by_side.png").read_bytes()) == (3 * 48, 32)
    assert np.isfinite(read_channels(examples / "out" / "denoised.exr")["ViewLayer.Combined.R"]).all()
    assert " s" in result.stdout.split("denoised in")[1]


def test_every_way_of_starting_the_cli(tmp_path):
    import subprocess
    import sys

    from cli_helpers import REPO

    env = {"PYTHONPATH": str(REPO), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    commands = [[sys.executable, "-m", "denoiser_core.cli"], [sys.executable, "-m", "denoiser_core"]]
    script = REPO / ".venv" / "bin" / "kprcan"
    if script.exists():  # present once the package is pip-installed (make test does that)
        commands.append([str(script)])
    for command in commands:
        done = subprocess.run([*command, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0 and "denoise" in done.stdout and "demo" in done.stdout, command


@pytest.mark.parametrize("command", [["models"], ["info", "RENDER"]])
def test_a_closed_stdout_pipe_ends_quietly(env, command):
    """``kprcan models | head -1``: the reader is gone before kprcan writes; like other Unix tools kprcan
    stops quietly with exit 0 (it printed "internal error: BrokenPipeError" and exited 1)."""
    import shlex
    import subprocess
    import sys

    from cli_helpers import REPO

    tmp_path, _run = env
    render = write_blender_exr(tmp_path / "r.exr", synthetic_passes(8, 8))
    args = [str(render) if arg == "RENDER" else arg for arg in command]
    env_vars = dict(os.environ, HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO),
                    KPRCAN_MODEL_PATH=str(tmp_path / "models"))
    read_end, write_end = os.pipe()
    os.close(read_end)  # a reader that has already gone, as `head -1` is after its line
    try:
        done = subprocess.run([sys.executable, "-m", "denoiser_core", *args], stdout=write_end,
                              stderr=subprocess.PIPE, env=env_vars, cwd=REPO, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    shell = subprocess.run(["bash", "-o", "pipefail", "-c",
                            f"{shlex.join([sys.executable, '-m', 'denoiser_core', *args])} | head -1"],
                           capture_output=True, env=env_vars, cwd=REPO, text=True, timeout=120)
    assert shell.returncode == 0 and shell.stderr == "", shell.stderr
    assert len(shell.stdout.splitlines()) == 1
