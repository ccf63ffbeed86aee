"""Running the real ``kprcan`` command line in a subprocess, isolated from the user's models."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def _environment(home: Path, model_path: Path | None) -> dict[str, str]:
    return dict(os.environ, HOME=str(home), PYTHONPATH=str(REPO), KPRCAN_MODEL_PATH=str(model_path or ""))


def kprcan(*args: str | os.PathLike, home: Path, model_path: Path | None = None, timeout: int = 300) -> Run:
    """``python -m denoiser_core ARGS`` with HOME and $KPRCAN_MODEL_PATH pointing at test folders."""
    done = subprocess.run([sys.executable, "-m", "denoiser_core", *map(str, args)], cwd=REPO,
                          env=_environment(home, model_path), capture_output=True, text=True, timeout=timeout)
    return Run(done.returncode, done.stdout, done.stderr)


def start_kprcan(*args: str | os.PathLike, home: Path, model_path: Path | None = None) -> subprocess.Popen:
    """``kprcan ARGS`` started in the background (for workers running side by side, and signals);
    finish it with ``finish``. It starts with Ctrl+C's default disposition, as a farm's or a terminal's
    job does, even when these tests run where SIGINT is ignored (a shell's background job: Python then
    keeps ignoring it, and a SIGINT test would see the frame finish)."""
    return subprocess.Popen([sys.executable, "-m", "denoiser_core", *map(str, args)], cwd=REPO,
                            env=_environment(home, model_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(process: subprocess.Popen, timeout: int = 300) -> Run:
    stdout, stderr = process.communicate(timeout=timeout)
    return Run(process.returncode, stdout, stderr)


def assert_one_line_error(run: Run, code: int, *fragments: str) -> str:
    """Exit ``code``, exactly one non-empty stderr line ``kprcan: error: ...`` containing ``fragments``."""
    assert run.code == code, run.stderr
    assert len(run.error_lines) == 1, run.stderr
    line = run.error_lines[0]
    assert line.startswith("kprcan: error: ") and "Traceback" not in run.stderr
    for fragment in fragments:
        assert fragment in line, line
    return line


# Runs argv[1:] in a child of this small process and prints that child's exit status and peak resident
# KiB (ru_maxrss). Measured from the test process directly, a child's ru_maxrss is at least the test
# process's own peak: on Linux the peak of the process a child was started from survives its exec.
_PEAK_OF_CHILD = (
    "import os, subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[1:])\n"
    "_pid, status, usage = os.wait4(child.pid, 0)\n"
    "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n"
)


def peak_of_process(command: list[str], **popen) -> tuple[int, int]:
    """(exit code, peak resident bytes) of ``command`` run to its end (Linux)."""
    measured = subprocess.run([sys.executable, "-c", _PEAK_OF_CHILD, *command], stdout=subprocess.PIPE,
                              text=True, check=True, **popen)
    code, kib = measured.stdout.split()[-2:]
    return int(code), int(kib) * 1024
