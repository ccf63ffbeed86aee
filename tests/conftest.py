"""Shared fixtures: real Cycles renders made with pip bpy in subprocesses, cached across sessions.

Renders are cached in ``.cache/test_renders/`` keyed by a hash of the scene, samples, seed, the bpy
render code and the interpreter, so only the first session (or a change to the render code) pays for
them. Delete the folder to force fresh renders.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from training.datagen.launch import render_cached

REPO = Path(__file__).resolve().parents[1]
RENDER_CACHE = REPO / ".cache" / "test_renders"
SMALL_SCENE = REPO / "tests" / "bpy_scenes" / "small_scene.json"
SPHERE_SCENE = REPO / "tests" / "bpy_scenes" / "sphere.json"
BPY5_PYTHON = REPO / ".venv-bpy5" / "bin" / "python"


@pytest.fixture(scope="session")
def small_scene_spec() -> dict:
    """The 64x48 test scene: checker floor, metal sphere, glass, emissive cube, fog cube, area light."""
    return json.loads(SMALL_SCENE.read_text())


@pytest.fixture(scope="session")
def cycles_exr(small_scene_spec) -> Path:
    """Multilayer EXR (float32, ZIP, all denoiser passes) of the small scene at 16 spp, bpy 4.5."""
    return render_cached(small_scene_spec, samples=16, seed=1, cache_dir=RENDER_CACHE, name="small16")


@pytest.fixture(scope="session")
def cycles_reference_exr(small_scene_spec) -> Path:
    """The same scene at 512 spp with an independent seed (a low-noise reference for the 16 spp one)."""
    return render_cached(small_scene_spec, samples=512, seed=7, cache_dir=RENDER_CACHE, name="small512")


@pytest.fixture(scope="session")
def cycles_sphere_exr() -> Path:
    """40x40 render of one diffuse sphere filling the frame (for normal/orientation checks), 8 spp."""
    spec = json.loads(SPHERE_SCENE.read_text())
    return render_cached(spec, samples=8, seed=1, cache_dir=RENDER_CACHE, name="sphere8")


@pytest.fixture(scope="session")
def bpy5_python() -> str:
    """Interpreter of the side environment with pip bpy 5.0 (skips when it is not installed)."""
    if not BPY5_PYTHON.exists():
        pytest.skip(f"bpy 5.0 side environment not found ({BPY5_PYTHON}); create it with "
                    "`python3 -m venv .venv-bpy5 && .venv-bpy5/bin/pip install bpy==5.0.1 numpy`")
    probe = subprocess.run([str(BPY5_PYTHON), "-c", "import bpy; print(bpy.app.version[0])"],
                           capture_output=True, text=True, timeout=300)
    if probe.returncode != 0 or probe.stdout.strip().splitlines()[-1:] != ["5"]:
        pytest.skip(f"{BPY5_PYTHON} cannot import bpy 5.x")
    return str(BPY5_PYTHON)


@pytest.fixture(scope="session")
def cycles_exr_bpy5(small_scene_spec, bpy5_python) -> Path:
    """The small scene at 16 spp rendered with bpy 5.0 (5.0 pass names in the file)."""
    return render_cached(small_scene_spec, samples=16, seed=1, cache_dir=RENDER_CACHE, name="small16-bpy5",
                         python=bpy5_python)


# tiny procedural views for the datagen tests: 48x48, noisy 2 and 8 spp, reference 16 spp
TINY_VIEWS = ("--resolution", "48", "48", "--spp", "2", "8", "--ref-spp", "16")


def _datagen(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "training.datagen", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="session")
def tiny_args() -> tuple[str, ...]:
    """CLI arguments of the tiny views in ``datagen_tiny_run`` (resolution, spp, reference spp)."""
    return TINY_VIEWS


@pytest.fixture(scope="session")
def datagen_cli():
    """Run ``python -m training.datagen ARGS...`` in a subprocess; asserts success, returns the result."""
    return _datagen


@pytest.fixture(scope="session")
def datagen_tiny_run(tmp_path_factory) -> Path:
    """Three tiny procedural views rendered by the CLI as two shards (0/2, 1/2) into one folder."""
    root = tmp_path_factory.mktemp("datagen")
    _datagen("render", "--out", str(root), "--views", "3", "--shard", "0/2", *TINY_VIEWS)
    _datagen("render", "--out", str(root), "--views", "3", "--shard", "1/2", *TINY_VIEWS)
    return root


@pytest.fixture(scope="session")
def bpy_python() -> str:
    """Interpreter with pip bpy 4.5 used for render subprocesses (this test interpreter)."""
    return sys.executable
