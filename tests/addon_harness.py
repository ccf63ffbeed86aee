"""Pytest-side helpers for the add-on tests: a built extension zip, and running bpy scripts.

bpy is never imported here: each script runs in its own ``sys.executable`` subprocess (one scene per
process) with Blender's user folder redirected to a temp dir (BLENDER_USER_RESOURCES, honoured by pip bpy).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
BUILD_CACHE = REPO / ".cache" / "addon_build"
WHEEL_CACHE = REPO / ".cache" / "wheels"
MARKER = "ADDON_RESULT "


def source_hash() -> str:
    """Hash of everything that goes into the zip (so a cached build is reused only while it is current)."""
    digest = hashlib.sha256()
    roots = [REPO / "blender_addon", REPO / "denoiser_core", REPO / "models"]
    files = [REPO / "build.py"] + [p for root in roots if root.is_dir() for p in sorted(root.rglob("*"))]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(REPO)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def run_build(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "build.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def built_linux_zip() -> Path:
    """The linux-x64 extension zip of the current sources (built once per source state, wheels cached)."""
    folder = BUILD_CACHE / source_hash()
    found = sorted(folder.glob("*-linux-x64.zip"))
    if found:
        return found[0]
    for stale in BUILD_CACHE.glob("*") if BUILD_CACHE.is_dir() else []:
        shutil.rmtree(stale, ignore_errors=True)  # builds of older sources (about 260 MB each)
    result = run_build("--platform", "linux-x64", "--validate", "--dist", str(folder),
                       "--cache", str(WHEEL_CACHE))
    assert result.returncode == 0, result.stderr + result.stdout
    return sorted(folder.glob("*-linux-x64.zip"))[0]


def run_bpy(script: str, user_dir: Path, timeout: int = 300, env: dict | None = None,
            python: str | None = None) -> tuple[dict, str]:
    """Run ``script`` with pip bpy (``python``, default this interpreter: bpy 4.5) in a subprocess;
    returns (its emitted result, its whole output)."""
    prelude = f"import sys\nsys.path.insert(0, {str(TESTS)!r})\nfrom addon_bpy import *\n"
    user_dir.mkdir(parents=True, exist_ok=True)
    environment = dict(os.environ, BLENDER_USER_RESOURCES=str(user_dir), **(env or {}))
    command = [python or sys.executable, "-c", prelude + script]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment,
                            cwd=user_dir)
    output = result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith(MARKER)]
    assert result.returncode == 0 and lines, \
        f"bpy script failed (exit {result.returncode}):\n{output[-6000:]}"
    return json.loads(lines[-1][len(MARKER):]), output
