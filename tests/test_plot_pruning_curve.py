"""benchmarks/plot_pruning_curve.py run for real: the committed curve draws to a PNG; bad data fails
with one line and writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "plot_pruning_curve.py"
DATA = REPO / "benchmarks" / "results" / "pruning_curve.json"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO)


def test_the_committed_curve_draws_a_png(tmp_path):
    output = tmp_path / "curve.png"
    result = run("--data", str(DATA), "-o", str(output))
    assert result.returncode == 0, result.stderr
    data = output.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 2 * height > 600  # two panels side by side
    assert list(tmp_path.iterdir()) == [output]  # no temporary file left


@pytest.mark.parametrize("entry", ["points", "oidn"])
def test_an_entry_without_its_psnr_fails_in_one_line_and_writes_nothing(tmp_path, entry):
    curve = json.loads(DATA.read_text())
    del (curve["points"][1] if entry == "points" else curve["oidn"])["psnr_64spp"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(curve))
    output = tmp_path / "curve.png"
    result = run("--data", str(bad), "-o", str(output))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "psnr_64spp" in result.stderr
    assert not output.exists()
