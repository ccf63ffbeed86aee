"""build.py: real per-platform extension zips (wheels from the package index, cached) and --validate.

The downloads go through .cache/wheels, so only a first run pays for them (about 450 MB, seconds here).
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from addon_harness import REPO, WHEEL_CACHE, run_build

pytestmark = pytest.mark.slow


def _manifest(zip_path: Path) -> dict:
    with zipfile.ZipFile(zip_path) as archive:
        return tomllib.loads(archive.read("blender_manifest.toml").decode())


def _names(zip_path: Path) -> set[str]:
    with zipfile.ZipFile(zip_path) as archive:
        return set(archive.namelist())


def test_linux_build_bundles_gpu_runtime_core_and_models(tmp_path):
    result = run_build("--platform", "linux-x64", "--validate", "--dist", str(tmp_path),
                       "--cache", str(WHEEL_CACHE))
    assert result.returncode == 0, result.stderr
    [zip_path] = tmp_path.glob("*.zip")
    assert zip_path.name == "kprcan_denoiser-0.1.0-linux-x64.zip"
    manifest = _manifest(zip_path)
    assert manifest["platforms"] == ["linux-x64"]
    assert (manifest["blender_version_min"], manifest["blender_version_max"]) == ("4.2.0", "5.1.0")
    wheels = [Path(w).name for w in manifest["wheels"]]
    assert [w.split("-")[0] for w in wheels] == ["onnxruntime_gpu", "openexr"]
    assert all("cp311" in w and "x86_64" in w for w in wheels)
    names = _names(zip_path)
    assert {"__init__.py", "denoise.py", "denoiser_core/__init__.py", "denoiser_core/passes.py"} <= names
    assert {f"wheels/{w}" for w in wheels} <= names
    shipped = sorted(p.name for p in (REPO / "models").glob("*.onnx"))
    assert sorted(n[len("models/"):] for n in names if n.startswith("models/")) == shipped
    assert not any("__pycache__" in n or n.endswith(".pyc") or "numpy" in n for n in names)


def test_other_platforms_get_their_own_wheels(tmp_path):
    platforms = {"windows-x64": ("onnxruntime_gpu", "win_amd64"), "macos-arm64": ("onnxruntime", "arm64"),
                 "macos-x64": ("onnxruntime", "x86_64")}
    args = [arg for platform in platforms for arg in ("--platform", platform)]
    result = run_build(*args, "--validate", "--dist", str(tmp_path), "--cache", str(WHEEL_CACHE))
    assert result.returncode == 0, result.stderr
    for platform, (runtime, arch) in platforms.items():
        manifest = _manifest(tmp_path / f"kprcan_denoiser-0.1.0-{platform}.zip")
        assert manifest["platforms"] == [platform]
        runtime_wheel = Path(manifest["wheels"][0]).name
        assert runtime_wheel.split("-")[0] == runtime
        assert arch in runtime_wheel or "universal2" in runtime_wheel  # macOS universal2 runs on both


def test_failed_download_fails_loudly_and_leaves_no_zip(tmp_path):
    empty = tmp_path / "no-wheels-here"
    empty.mkdir()
    dist = tmp_path / "dist"
    result = run_build("--platform", "linux-x64", "--wheels-from", str(empty), "--dist", str(dist),
                       "--cache", str(tmp_path / "cache"))
    assert result.returncode == 1
    assert "cannot download onnxruntime-gpu" in result.stderr and "linux-x64" in result.stderr
    assert not dist.exists() or not list(dist.iterdir())


@pytest.fixture(scope="module")
def plain_zip(tmp_path_factory) -> Path:
    """A wheel-less build (offline, fast) to break in different ways."""
    dist = tmp_path_factory.mktemp("plain")
    result = run_build("--platform", "linux-x64", "--no-wheels", "--validate", "--dist", str(dist))
    assert result.returncode == 0, result.stderr
    return next(dist.glob("*.zip"))


def _rewritten(source: Path, target: Path, drop: str = "", manifest_edit=None) -> Path:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            if drop and item.filename.startswith(drop):
                continue
            data = old.read(item.filename)
            if item.filename == "blender_manifest.toml" and manifest_edit:
                data = manifest_edit(data.decode()).encode()
            new.writestr(item, data)
    return target


@pytest.mark.parametrize("drop, edit, message", [
    ("denoiser_core/", None, "denoiser_core/__init__.py missing"),
    ("", lambda t: t.replace("wheels = []", 'wheels = ["./wheels/onnxruntime-1-cp311-cp311-win_amd64.whl"]'),
     "not in the zip"),
    ("", lambda t: t.replace('id = "kprcan_denoiser"', 'id = "KPRCAN Denoiser"'), "id 'KPRCAN Denoiser'"),
    ("", lambda t: t.replace("[permissions]", "[permissions"), "does not parse"),
    ("__init__.py", None, "__init__.py missing"),
])
def test_check_names_what_is_wrong_with_a_zip(plain_zip, tmp_path, drop, edit, message):
    broken = _rewritten(plain_zip, tmp_path / "broken.zip", drop, edit)
    result = run_build("--check", str(broken))
    assert result.returncode == 1
    assert message in result.stderr, result.stderr


def test_check_refuses_a_zip_without_the_runtime_wheels(plain_zip):
    result = run_build("--check", str(plain_zip))
    assert result.returncode == 1
    assert "needs onnxruntime and OpenEXR wheels" in result.stderr


def test_python_313_build_targets_blender_51(tmp_path):
    result = run_build("--platform", "macos-arm64", "--no-wheels", "--python-version", "3.13",
                       "--dist", str(tmp_path))
    assert result.returncode == 0, result.stderr
    manifest = _manifest(next(tmp_path.glob("*-py313.zip")))
    assert manifest["blender_version_min"] == "5.1.0" and "blender_version_max" not in manifest


def test_zips_are_readable_by_everyone_and_each_runtime_has_its_own_name(tmp_path):
    """mkstemp's 0600 must not survive into the zip, and the --cpu-only zip must not replace the GPU one."""
    for extra in ((), ("--cpu-only",)):
        result = run_build("--platform", "linux-x64", "--no-wheels", "--dist", str(tmp_path), *extra)
        assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["kprcan_denoiser-0.1.0-linux-x64-cpu.zip", "kprcan_denoiser-0.1.0-linux-x64.zip"]
    umask = os.umask(0)
    os.umask(umask)
    for name in names:
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask


def test_directml_zip_for_windows(tmp_path):
    result = run_build("--directml", "--validate", "--dist", str(tmp_path), "--cache", str(WHEEL_CACHE))
    assert result.returncode == 0, result.stderr
    manifest = _manifest(tmp_path / "kprcan_denoiser-0.1.0-windows-x64-directml.zip")
    assert [Path(w).name.split("-")[0] for w in manifest["wheels"]] == ["onnxruntime_directml", "openexr"]
    refused = run_build("--directml", "--platform", "linux-x64", "--no-wheels", "--dist", str(tmp_path))
    assert refused.returncode == 1 and "--directml builds only windows-x64" in refused.stderr


def _lowest_openexr() -> str:
    """The OpenEXR minimum, which pyproject.toml and build.py must state alike."""
    pins = {re.search(r"OpenEXR>=([\d.]+)", text).group(1)
            for text in ((REPO / "pyproject.toml").read_text(), (REPO / "build.py").read_text())}
    assert len(pins) == 1, f"pyproject.toml and build.py pin different OpenEXR minimums: {pins}"
    return pins.pop()


EXR_AT_THE_PIN = r"""
import sys, tempfile
from pathlib import Path
import numpy as np, OpenEXR
from exr_fixtures import synthetic_passes, write_blender_exr
from denoiser_core import read_exr, write_exr
from denoiser_core.exr import ExrImage
assert OpenEXR.__file__.startswith(sys.argv[1]), OpenEXR.__file__
assert hasattr(OpenEXR, "set_global_thread_count")  # multi-threaded compression (exr.py uses it when there)
folder = Path(tempfile.mkdtemp())
passes = synthetic_passes()
for major in (4, 5):  # 4.x and 5.0 pass names, two view layers
    source = write_blender_exr(folder / f"in{major}.exr", passes, layers=("ViewLayer", "Other"),
                               blender_major=major)
    image = read_exr(source)
    assert sorted(image.layers) == ["Other", "ViewLayer"], image.layers
    assert set(image.canonical_passes("Other")) >= set(passes), sorted(image.canonical_passes("Other"))
    write_exr(image, folder / f"out{major}.exr")
    again = read_exr(folder / f"out{major}.exr")
    for name in passes:
        np.testing.assert_array_equal(again.canonical_passes("ViewLayer")[name],
                                      image.canonical_passes("ViewLayer")[name])
print("OK", OpenEXR.__version__)
"""


def test_the_lowest_openexr_allowed_reads_and_writes_blender_files(tmp_path):
    """The pin is what the code needs (OpenEXR.File, every layer of a multilayer file): install exactly the
    lowest version allowed (cached in .cache) and read and write Blender-named files with it."""
    version = _lowest_openexr()
    target = REPO / ".cache" / "openexr-pin" / version
    if not any(target.glob("OpenEXR*")):
        installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                                    str(target), f"OpenEXR=={version}", "--disable-pip-version-check"],
                                   capture_output=True, text=True, timeout=600)
        assert installed.returncode == 0, installed.stderr[-2000:]
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(REPO), str(REPO / "tests")]))
    result = subprocess.run([sys.executable, "-c", EXR_AT_THE_PIN, str(target)], capture_output=True,
                            text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[0] == "OK" and result.stdout.split()[1] in (version, f"{version}.0")
