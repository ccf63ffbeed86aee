"""denoise.py in a real Blender binary (``blender`` on PATH; ``make test`` installs Debian's where apt-get
can): ``blender -b scene.blend --python-exit-code 1 -P blender_addon/denoise.py -- ...``.

Debian's Blender 3.4 has no numpy and refuses pip installs into its Python (PEP 668); the steps
docs/blender.md gives for it are the ones used here: ``pip install --target DIR numpy onnxruntime
OpenEXR`` for Blender's Python version, then ``PYTHONPATH=DIR``. Before the worker process, such a
Blender rendered and then crashed in ``OpenEXR.File`` (exit 139): its own OpenEXR collides with the pip one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from addon_harness import REPO, TESTS
from onnx_models import save_model

from denoiser_core import read_exr

BLENDER = shutil.which("blender")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(BLENDER is None, reason="no `blender` on PATH (Debian/Ubuntu: "
                                 "apt-get install blender; make test does it where apt-get works)")]
SCRIPT = REPO / "blender_addon" / "denoise.py"
DEPENDENCIES = ("numpy", "onnxruntime", "OpenEXR>=3.5")


def blender(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([BLENDER, "-b", "--factory-startup", *args], capture_output=True, text=True,
                          timeout=180, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def blender_python() -> str:
    """The Python version inside the Blender binary ("3.11" for Debian's 3.4)."""
    result = blender("--python-expr", "import sys; print('PYTHON', *sys.version_info[:2])")
    found = re.search(r"^PYTHON (\d+) (\d+)$", result.stdout, re.M)
    assert found, result.stdout[-2000:] + result.stderr[-2000:]
    return f"{found.group(1)}.{found.group(2)}"


@pytest.fixture(scope="module")
def site_dir(blender_python) -> Path:
    """numpy, onnxruntime and OpenEXR for Blender's Python, installed with ``pip install --target`` (the
    documented steps), kept in .cache between runs."""
    target = REPO / ".cache" / "blender-binary-python" / blender_python
    if not (target / "onnxruntime").is_dir():
        result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(target),
                                 "--python-version", blender_python, "--only-binary=:all:",
                                 "--disable-pip-version-check", *DEPENDENCIES],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    return target


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> dict:
    """A 3-frame animation saved by the binary itself (a newer Blender's file may not open in it)."""
    root = tmp_path_factory.mktemp("blender_binary")
    blend = root / "anim.blend"
    result = blender("--python-exit-code", "1", "--python-expr",
                     f"import sys; sys.path.insert(0, {str(TESTS)!r}); from addon_bpy import build_scene; "
                     f"import bpy; build_scene(samples=1, frames=3); "
                     f"bpy.ops.wm.save_as_mainfile(filepath={str(blend)!r})")
    assert result.returncode == 0 and blend.is_file(), result.stderr[-3000:]
    return {"blend": blend, "model": save_model(root / "models", "guided"), "root": root}


def run_script(scene: dict, site_dir: Path, *options: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(site_dir))
    return blender(str(scene["blend"]), "--python-exit-code", "1", "-P", str(SCRIPT), "--", *options,
                   env=environment, cwd=cwd)


def test_real_blender_renders_and_denoises_frames(scene, site_dir, tmp_path):
    out = tmp_path / "out"
    result = run_script(scene, site_dir, "--frames", "1-2", "--samples", "1", "--output", f"{out}/",
                        "--model", str(scene["model"]), "--device", "cpu", "--png", cwd=tmp_path)
    assert result.returncode == 0, (result.returncode, result.stdout[-3000:], result.stderr[-3000:])
    assert sorted(p.name for p in out.iterdir()) == ["anim_0001.exr", "anim_0001.png", "anim_0002.exr",
                                                    "anim_0002.png"]
    first, second = read_exr(out / "anim_0001.exr"), read_exr(out / "anim_0002.exr")
    assert first.layers == ["ViewLayer"]
    assert {"Combined", "Noisy Image", "Denoised Diffuse", "Denoised Specular", "DiffDir"} <= \
        set(first.layer_passes("ViewLayer"))
    moved = first.find("ViewLayer", "Combined").hwc - second.find("ViewLayer", "Combined").hwc
    assert abs(moved).max() > 0.05  # the sphere moves: each frame is its own render
    assert "denoise.py: model guided on CPU" in result.stdout


def test_real_blender_bad_model_exits_2_with_one_line(scene, site_dir, tmp_path):
    result = run_script(scene, site_dir, "--frames", "1", "--output", str(tmp_path / "out"),
                        "--model", str(tmp_path / "absent.onnx"), cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("denoise.py: error:")]
    assert len(errors) == 1 and "model file not found" in errors[0]
    assert not (tmp_path / "out").exists()
