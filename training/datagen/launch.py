"""Run render jobs in bpy subprocesses (one process per job) from plain Python."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DATAGEN_DIR = Path(__file__).resolve().parent
RENDER_SCRIPT = DATAGEN_DIR / "render.py"
# Files whose content determines the pixels a job produces (cache keys hash them).
BPY_SOURCES = ("render.py", "bpy_scene.py", "bpy_materials.py", "blender_compat.py")


class RenderError(RuntimeError):
    pass


def code_hash() -> str:
    digest = hashlib.sha256()
    for name in BPY_SOURCES:
        digest.update((DATAGEN_DIR / name).read_bytes())
    return digest.hexdigest()


def run_job(job: dict, python: str | None = None, timeout: float | None = None,
            log_path: str | os.PathLike | None = None, script: Path = RENDER_SCRIPT) -> list[dict]:
    """Render ``job`` (see render.py, or ``script``'s own job format) in a fresh bpy process; returns its
    RESULT records.

    ``python`` is an interpreter with pip bpy (default: this one). Blender's own chatter goes to
    ``log_path`` (appended) or is discarded; on failure the tail of it is in the exception.
    """
    python = python or sys.executable
    out_dir = Path(job["renders"][0]["out"]).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, job_path = tempfile.mkstemp(suffix=".job.json", dir=out_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(job, f)
        proc = subprocess.run([python, str(script), job_path], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    finally:
        os.unlink(job_path)
    if log_path is not None:
        with open(log_path, "a") as log:
            log.write(proc.stdout[-20000:] + proc.stderr[-20000:])
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise RenderError(f"render job failed (exit {proc.returncode}):\n" + "\n".join(tail))
    return [json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines()
            if line.startswith("RESULT ")]


def render_cached(scene: dict, samples: int, seed: int, cache_dir: str | os.PathLike, name: str,
                  python: str | None = None, threads: int = 2, job_options: dict | None = None) -> Path:
    """One EXR of ``scene``, cached under ``cache_dir`` by a hash of (scene, samples, seed, bpy code,
    interpreter) so repeated test sessions reuse it; the write is atomic (see render.py)."""
    python = python or sys.executable
    job_options = job_options or {}
    key_source = json.dumps([scene, samples, seed, threads, python, code_hash(), job_options], sort_keys=True)
    key = hashlib.sha256(key_source.encode()).hexdigest()[:16]
    out = Path(cache_dir) / f"{name}-{key}.exr"
    if not out.exists():
        job = {**job_options, "scene": scene, "threads": threads,
               "renders": [{"samples": samples, "seed": seed, "out": str(out)}]}
        run_job(job, python=python, timeout=900)
    if not out.exists():
        raise RenderError(f"render produced no file {out}")
    return out
