"""blender_addon/denoise.py run the way the tests can run it: ``python denoise.py scene.blend -- ...``
with pip bpy (the same file runs as ``blender -b scene.blend -P denoise.py -- ...``).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from addon_harness import REPO, built_linux_zip, run_bpy
from exr_fixtures import read_channels
from onnx_models import save_model

from denoiser_core import denoise_file, load_model, read_exr
from denoiser_core.shot import denoise_shot

pytestmark = pytest.mark.slow
SCRIPT = REPO / "blender_addon" / "denoise.py"


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> dict:
    """A saved 3-frame animation (.blend) and the guided test model."""
    root = tmp_path_factory.mktemp("headless")
    blend = root / "anim.blend"
    run_bpy(f"build_scene(samples=1, frames=3)\nbpy.ops.wm.save_as_mainfile(filepath={str(blend)!r})\n"
            "emit(saved=True)", root / "user")
    return {"blend": blend, "model": save_model(root / "models", "guided"), "root": root}


def denoise(script: Path, blend: Path, *options: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), str(blend), "--", *options], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_three_frames_render_and_denoise_to_exr_and_png(scene, tmp_path):
    out = tmp_path / "denoised"
    result = denoise(SCRIPT, scene["blend"], "--frames", "1-3", "--samples", "1", "--output", f"{out}/",
                     "--model", str(scene["model"]), "--device", "cpu", "--png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = [f"anim_000{frame}.{ext}" for frame in (1, 2, 3) for ext in ("exr", "png")]
    assert sorted(p.name for p in out.iterdir()) == expected
    first, last = read_exr(out / "anim_0001.exr"), read_exr(out / "anim_0003.exr")
    assert {"Combined", "Noisy Image", "Denoised Diffuse", "Denoised Specular", "DiffDir"} <= \
        {p.name for p in first.passes}
    moved = first.find("ViewLayer", "Combined").hwc - last.find("ViewLayer", "Combined").hwc
    assert abs(moved).max() > 0.05  # the sphere moves: each frame is its own render
    assert png_size(out / "anim_0002.png") == (64, 48)
    assert "frame 3:" in result.stdout
    assert "model guided on CPU" in result.stdout  # which device ran (and why, after a fallback)


def test_temporal_renders_every_frame_then_denoises_them_as_one_shot(scene, tmp_path):
    """--temporal turns the Vector pass on and denoises the frames in order with denoise_shot (run here
    on the kept noisy frames it writes the same files); the first frame is the per-frame result."""
    out = tmp_path / "out"
    result = denoise(SCRIPT, scene["blend"], "--frames", "1-3", "--samples", "1", "--output", str(out),
                     "--model", str(scene["model"]), "--device", "cpu", "--temporal", "--keep-noisy",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 frame(s) denoised in temporal mode" in result.stdout
    denoiser = load_model(scene["model"], "cpu")
    frames = [(n, out / f"anim_000{n}_noisy.exr", tmp_path / f"shot_000{n}.exr") for n in (1, 2, 3)]
    assert "ViewLayer.Vector.X" in read_channels(frames[0][1])
    assert denoise_shot(frames, denoiser) == 3
    for number, _noisy, expected in frames:
        written = read_channels(out / f"anim_000{number}.exr")
        mine = {k: v for k, v in read_channels(expected).items() if k.startswith("ViewLayer.")}
        assert set(written) == set(mine) and "ViewLayer.Temporal History.N" in written
        for name, pixels in mine.items():
            np.testing.assert_array_equal(written[name], pixels, err_msg=f"frame {number} {name}")
    assert read_channels(out / "anim_0003.exr")["ViewLayer.Temporal History.N"].max() == 3.0
    per_frame = read_channels(denoise_file(frames[0][1], tmp_path / "single.exr", model=denoiser))
    first = read_channels(out / "anim_0001.exr")
    for channel in "RGBA":
        name = f"ViewLayer.Combined.{channel}"
        np.testing.assert_array_equal(first[name], per_frame[name])


def test_temporal_with_motion_blur_exits_2_before_rendering(scene, tmp_path):
    blurred = tmp_path / "blurred.blend"
    run_bpy(f"bpy.ops.wm.open_mainfile(filepath={str(scene['blend'])!r})\n"
            "bpy.context.scene.render.use_motion_blur = True\n"
            f"bpy.ops.wm.save_as_mainfile(filepath={str(blurred)!r})\nemit(saved=True)", tmp_path / "user")
    out = tmp_path / "out"
    result = denoise(SCRIPT, blurred, "--frames", "1-2", "--output", str(out), "--model", str(scene["model"]),
                     "--temporal", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == ("denoise.py: error: --temporal needs Motion Blur off: "
                                                      "Cycles writes no motion vectors with Motion Blur on")
    assert not out.exists() or not any(out.iterdir())


def test_temporal_with_frame_gaps_exits_2_before_rendering(scene, tmp_path):
    out = tmp_path / "out"
    result = denoise(SCRIPT, scene["blend"], "--frames", "1,3", "--output", str(out), "--model",
                     str(scene["model"]), "--temporal", cwd=tmp_path)
    assert result.returncode == 2
    expected = ("denoise.py: error: --temporal needs consecutive frames "
                "(Frame Step 1, a --frames range without gaps)")
    assert result.stderr.strip().splitlines()[-1] == expected
    assert not out.exists() or not any(out.iterdir())


def test_relative_output_and_no_overwrite_without_asking(scene, tmp_path):
    args = ("--frames", "2", "--samples", "1", "--output", "//out/", "--model", str(scene["model"]))
    blend = tmp_path / "copy.blend"
    blend.write_bytes(scene["blend"].read_bytes())
    assert denoise(SCRIPT, blend, *args, cwd=tmp_path).returncode == 0
    target = tmp_path / "out" / "copy_0002.exr"  # "//" is the .blend's folder
    before = target.read_bytes()
    again = denoise(SCRIPT, blend, *args, cwd=tmp_path)
    assert again.returncode == 2 and "exists (use --overwrite" in again.stderr
    assert target.read_bytes() == before


@pytest.mark.parametrize("options, message", [
    (("--model", "/nonexistent/model.onnx"), "model file not found"),
    (("--frames", "5-2"), "end before start"),
    (("--samples", "0"), "--samples must be at least 1"),
    (("--frames", "1", "--bogus"), "unrecognized arguments: --bogus"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(scene, tmp_path, options, message):
    out = tmp_path / "out"
    result = denoise(SCRIPT, scene["blend"], "--output", str(out), "--model", str(scene["model"]), *options,
                     cwd=tmp_path)
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if line.startswith("denoise.py")]
    assert line.startswith("denoise.py: error: ") and message in line
    assert "usage:" not in result.stderr  # argparse's usage lines would come before the error
    assert not out.exists() or not any(out.iterdir())


def test_options_before_the_double_dash_are_refused(scene, tmp_path):
    """Without ``--`` every option would be ignored (the whole frame range rendered, exit 0)."""
    result = subprocess.run([sys.executable, str(SCRIPT), str(scene["blend"]), "--frames", "2",
                             "--output", str(tmp_path / "out")], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "denoise.py: error: '--frames' before '--' would be ignored: put options after it, "
        "e.g. python denoise.py scene.blend -- --frames 2 --output " + str(tmp_path / "out")]
    assert not (tmp_path / "out").exists()


def test_missing_blend_file(tmp_path):
    result = denoise(SCRIPT, tmp_path / "nope.blend", cwd=tmp_path)
    assert result.returncode == 2 and "no such .blend file" in result.stderr


def test_script_inside_the_extension_zip_uses_its_bundled_core(scene, tmp_path):
    """The copy shipped in the extension runs standalone and imports the denoiser_core next to it."""
    unpacked = tmp_path / "extension"
    with zipfile.ZipFile(built_linux_zip()) as archive:
        archive.extractall(unpacked, [n for n in archive.namelist() if not n.startswith("wheels/")])
    result = denoise(unpacked / "denoise.py", scene["blend"], "--frames", "1", "--samples", "1",
                     "--output", str(tmp_path / "out"), "--model", str(scene["model"]), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"denoiser_core from {unpacked / 'denoiser_core'}" in result.stdout
    assert (tmp_path / "out" / "anim_0001.exr").is_file()


@pytest.mark.bpy5
def test_installed_extension_script_in_blender_5(scene, bpy5_python, tmp_path):
    """The extension's own denoise.py under bpy 5.0, whose Python has no onnxruntime: the installed
    extension's wheels (on sys.path, as in ``blender -b -P``) and bundled core do the work."""
    user = tmp_path / "user"
    run_bpy(f"install({str(built_linux_zip())!r})\nemit(ok=True)", user, python=bpy5_python)
    script = user / "extensions" / "user_default" / "kprcan_denoiser" / "denoise.py"
    out = tmp_path / "out"
    result = subprocess.run([bpy5_python, str(script), str(scene["blend"]), "--", "--frames", "1-2",
                             "--samples", "1", "--output", str(out), "--model", str(scene["model"])],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env=dict(os.environ, BLENDER_USER_RESOURCES=str(user)))
    shutil.rmtree(user, ignore_errors=True)  # the installed extension: about 700 MB
    assert result.returncode == 0, result.stderr[-3000:]
    names = {p.name for p in read_exr(out / "anim_0002.exr").passes}
    assert {"Diffuse Direct", "Denoised Diffuse", "Noisy Image"} <= names  # 5.0 pass names
