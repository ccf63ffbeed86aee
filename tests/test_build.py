"""build.py: real per-platform extension zips (wheels from the package index, cached) and --validate.

The downloads go through .cache/wheels, so only a first run pays for them (about 450 MB, seconds here).
"""

from __future__ import annotations

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
