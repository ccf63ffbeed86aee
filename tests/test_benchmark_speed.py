"""benchmarks/benchmark_speed.py run for real at a tiny size, with a real CPU-burning process beside it."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "benchmark_speed.py"
ROUND = re.compile(r"^64x48 round (\d+): fast ([\d.e-]+) s, oidn ([\d.e-]+) s denoising; other processes")
ROW = re.compile(r"^64x48\s+(fast|oidn)\s+" + r"\s+".join([r"([\d.e-]+)\s+([\d.]+)"] * 3) + r"\s+(\d+)$")


def cpu_model() -> str:
    return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name"))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="the idle check reads /proc")
def test_alternates_methods_reports_medians_and_marks_a_busy_machine(tmp_path):
    command = [sys.executable, str(SCRIPT), "--sizes", "64x48", "--frames", "1", "--rounds", "2",
               "--models", "fast"]
    bench = subprocess.Popen(command, cwd=REPO, env=dict(os.environ, HOME=str(tmp_path)), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    header = []
    for line in bench.stdout:  # the burner starts once the header is out: during the run, not before it
        header.append(line)
        if line.startswith("runs:"):
            break
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        rest, stderr = bench.communicate(timeout=120)
    finally:
        for process in (burner, bench):
            process.kill()  # only what is still running: the benchmark has exited unless it hung
            process.wait()
    assert bench.returncode == 0, stderr
    lines = [line.rstrip("\n") for line in header] + rest.splitlines()

    fields = {key: value.strip() for key, value in (line.split(":", 1) for line in lines[:5])}
    assert fields["command"].endswith(
        "benchmark_speed.py --sizes 64x48 --frames 1 --rounds 2 --models fast")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d \S+", fields["date"])
    assert fields["cpu"].startswith(f"{cpu_model()}, {len(os.sched_getaffinity(0))} cores")

    rounds = [ROUND.match(line) for line in lines if " round " in line]
    assert [int(m.group(1)) for m in rounds if m] == [1, 2], lines  # fast, then oidn, in every round
    fast_median = statistics.median(float(m.group(2)) for m in rounds)
    oidn_median = statistics.median(float(m.group(3)) for m in rounds)

    marker = next(i for i, line in enumerate(lines) if line.startswith("*** NOT AN IDLE MACHINE"))
    assert "other processes used up to" in lines[marker] and lines[marker].endswith("not valid ***")
    assert f"(pid {burner.pid})" in stderr  # the burner is named as a culprit, not only a total
    table = next(i for i, line in enumerate(lines) if line.startswith("size "))
    assert marker < table
    rows = {m.group(1): [float(x) for x in m.groups()[1:]] for m in map(ROW.match, lines[table + 1:]) if m}
    assert set(rows) == {"fast", "oidn"}, lines[table:]
    fast, oidn = rows["fast"], rows["oidn"]
    assert oidn[1] == oidn[3] == oidn[5] == 1.0
    assert fast[4] == pytest.approx(fast_median, rel=1e-3) and oidn[4] == pytest.approx(oidn_median, rel=1e-3)
    assert fast[5] == pytest.approx(fast_median / oidn_median, abs=0.006)
    assert fast[1] == pytest.approx(fast[0] / oidn[0], abs=0.01)
    assert fast[0] > fast[2] >= fast[4] > 0  # the whole process holds the frame, which holds the denoising
    assert all(row[6] > 20 for row in rows.values())  # peak MiB of a Python process with numpy loaded
