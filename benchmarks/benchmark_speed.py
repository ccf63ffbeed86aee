"""Speed and peak memory of each shipped model against OIDN, at 1920x1080 and 3840x2160.

    .venv/bin/python benchmarks/benchmark_speed.py [EXR ...] [--sizes 1920x1080,3840x2160] [--frames 3]
                                                   [--rounds 3] [--models fast]

Frames are synthesised from the given multilayer EXR(s) (default: examples/noisy.exr) by mirror-tiling every
pass up to each size (``--as-is`` uses the given files unchanged). For each size the methods take turns
(``round 1: fast oidn``, ``round 2: fast oidn``, ...) so that a slow drift of the machine hits them alike;
every turn is a fresh subprocess that denoises ``--frames`` frames, so its peak memory is its own (the
child reads it itself, ``own_peak_mib``). Per turn: ``process s`` is the child's whole life (start-up,
imports, model load, all frames), ``total s`` the median frame's reading + denoising + writing,
``denoise s`` the median frame's denoising alone (each method's set-up, the model's session and OIDN's
device and filter, is made before the timer). With ``--frames 1``, ``process s`` is what a user waits for
one frame. The table gives the median over rounds of each, the ratio of those medians to OIDN's, and the
largest peak. OIDN (``pyoidn``) gets colour + albedo + normal, HDR, quality "high", on the CPU.

The figures mean something only on an idle machine. The run is marked NOT AN IDLE MACHINE (on stderr and
above the table) when the 1-minute load average exceeds 0.5 before it starts, or when, during a round,
other processes used more than 0.1 of a core: /proc/stat's busy time (steal included) less the CPU time
of this run and its children. The load average is not used once running, as it then counts this run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from denoiser_core import list_models, load_model, read_exr, write_exr  # noqa: E402
from denoiser_core.exr import ExrImage, ExrPart, ExrPass  # noqa: E402
from denoiser_core.inference import DEFAULT_TILE  # noqa: E402
from denoiser_core.memory import keep_freed_memory  # noqa: E402
from denoiser_core.pipeline import denoise_image  # noqa: E402
from denoiser_core.tiling import MEMORY_BUDGET  # noqa: E402

PEAK_BUDGET_MIB = MEMORY_BUDGET / 2**20  # what the automatic windows keep a 4K frame within
IDLE_LOAD_LIMIT = 0.5  # 1-minute load average before the run
IDLE_OTHER_CORES = 0.1  # CPU of other processes during a round, in cores
PROC_STAT = Path("/proc/stat")
TICK = os.sysconf("SC_CLK_TCK")
TIMES = ("process_s", "total_s", "denoise_s")  # the columns of the table, as ``run_isolated`` names them


def mirror_tile(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """(C, h, w) -> (C, height, width) by repeating the image mirrored (no seams)."""
    _c, h, w = pixels.shape
    rows = np.arange(height) % (2 * h)
    cols = np.arange(width) % (2 * w)
    rows = np.where(rows >= h, 2 * h - 1 - rows, rows)
    cols = np.where(cols >= w, 2 * w - 1 - cols, cols)
    return np.ascontiguousarray(pixels[:, rows[:, None], cols[None, :]])


def synthesise(source: Path, width: int, height: int, target: Path) -> Path:
    """The first view layer of ``source`` with every pass mirror-tiled to width x height."""
    image = read_exr(source)
    layer = next(layer for layer in image.layers if image.canonical_passes(layer))
    passes = [ExrPass(p.layer, p.name, p.components, mirror_tile(p.pixels, height, width))
              for p in image.passes if p.layer == layer]
    header = {k: v for k, v in image.parts[0].header.items() if k not in ("dataWindow", "displayWindow")}
    write_exr(ExrImage(passes, [ExrPart("", header)]), target)
    return target


def worker(method: str, frames: list[Path], tile: int, device: str) -> dict:
    """One method over ``frames`` in this process; returns seconds per frame (median) and the split."""
    totals, computes = [], []
    keep_freed_memory()  # as the command line and the extension's worker do (for OIDN too: same process)
    denoiser = None if method == "oidn" else load_model(method, device)
    if denoiser is None:  # OIDN's device and filter are made outside the timer, as load_model makes ours
        import pyoidn

        pyoidn.denoise(*[np.full((8, 8, 3), 0.5, np.float32)] * 3, hdr=True, quality="high")
    out_dir = Path(tempfile.mkdtemp(prefix="kprcan-bench-"))
    for index, frame in enumerate(frames):
        started = time.perf_counter()
        image = read_exr(frame)
        compute_started = time.perf_counter()
        if denoiser is None:
            _oidn(image)
        else:
            denoise_image(image, denoiser, tile)
        computes.append(time.perf_counter() - compute_started)
        write_exr(image, out_dir / f"{index}.exr")
        # freed before the next read, as denoise_file does: otherwise two 4K frames (~2 GiB each) are
        # alive while the next one is read, and the peak measures this loop rather than the denoiser
        del image
        totals.append(time.perf_counter() - started)
        (out_dir / f"{index}.exr").unlink()
    out_dir.rmdir()
    return {"total_s": float(np.median(totals)), "denoise_s": float(np.median(computes)),
            "own_peak_mib": own_peak_mib()}


def own_peak_mib() -> float | None:
    """This process's peak resident memory since it started (Linux: VmHWM), or None where there is no
    /proc. Not the child's ``ru_maxrss`` as its parent sees it: on Linux a child started by
    ``subprocess`` keeps, through its exec, the peak of the process it was started from, so every
    child of a run that had synthesised a 4K frame (1.9 GiB) reported at least that."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return None if kib is None else kib / 1024


def _oidn(image: ExrImage) -> None:
    import pyoidn

    layer = next(layer for layer in image.layers if image.canonical_passes(layer))
    passes = image.canonical_passes(layer)
    color = np.ascontiguousarray(passes.get("noisy_image", passes["combined"])[..., :3])
    albedo = np.ascontiguousarray(passes["denoising_albedo"][..., :3])
    normal = np.ascontiguousarray(passes["denoising_normal"][..., :3])
    result = pyoidn.denoise(color, albedo, normal, hdr=True, quality="high")
    combined = image.find(layer, next(p.name for p in image.layer_passes(layer).values()
                                      if p.canonical == "combined"))
    combined.pixels[:3] = result.transpose(2, 0, 1)


def run_isolated(method: str, frames: list[Path], tile: int, device: str) -> dict:
    """``worker`` in a fresh subprocess; adds that child's whole wall time and peak resident memory."""
    command = [sys.executable, __file__, "--worker", method, "--tile", str(tile), "--device", device,
               *map(str, frames)]
    with tempfile.TemporaryFile("w+") as captured:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=captured, stderr=subprocess.STDOUT, text=True)
        _pid, status, usage = os.wait4(child.pid, 0)
        process_s = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        captured.seek(0)
        output = captured.read()
    if child.returncode != 0:
        return {"error": output.strip().splitlines()[-1] if output.strip() else f"exit {child.returncode}"}
    result = json.loads(output.strip().splitlines()[-1])
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    own = result.pop("own_peak_mib", None)
    result["peak_mib"] = own if own is not None else usage.ru_maxrss * scale / 2**20
    result["process_s"] = process_s
    return result


@dataclass
class CpuSnapshot:
    """What the machine, this run (itself and its reaped children) and each process had used so far."""

    wall: float
    machine_busy_s: float
    own_s: float
    processes: dict[int, tuple[str, float]]  # pid -> (name, CPU seconds)

    @classmethod
    def take(cls) -> CpuSnapshot:
        # user nice system idle iowait irq softirq steal: everything but idle and iowait is busy
        ticks = [int(x) for x in PROC_STAT.read_text().split("\n", 1)[0].split()[1:9]]
        busy = sum(ticks) - ticks[3] - ticks[4]
        processes = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:  # exited meanwhile
                continue
            fields = text[text.rindex(")") + 2:].split()  # fields 3.. of proc(5); the name may hold spaces
            processes[int(stat.parent.name)] = (text[text.index("(") + 1:text.rindex(")")],
                                                (int(fields[11]) + int(fields[12])) / TICK)
        return cls(time.monotonic(), busy / TICK, sum(os.times()[:4]), processes)

    def others_since(self, earlier: CpuSnapshot) -> tuple[float, str]:
        """Cores used by other processes between ``earlier`` and this snapshot, and the busiest of them."""
        cores = max(0.0, (self.machine_busy_s - earlier.machine_busy_s) - (self.own_s - earlier.own_s))
        elapsed = self.wall - earlier.wall
        used = {pid: (name, cpu - earlier.processes.get(pid, (name, 0.0))[1])
                for pid, (name, cpu) in self.processes.items() if pid != os.getpid()}
        busiest = sorted(used.items(), key=lambda item: -item[1][1])[:3]
        named = ", ".join(f"{name} (pid {pid}) {cpu / elapsed:.2f} cores" for pid, (name, cpu) in busiest
                          if cpu / elapsed >= IDLE_OTHER_CORES / 2)
        return cores / elapsed, named


def describe_machine() -> str:
    """CPU model, usable cores and memory, from /proc where there is one."""
    if not PROC_STAT.exists():
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])  # MemTotal is the first line
    return f"{model}, {len(os.sched_getaffinity(0))} cores, {memory_kib / 2**20:.0f} GiB memory"


def print_header(args: argparse.Namespace, methods: list[str]) -> float:
    """What the figures need beside them; returns the 1-minute load average before the run."""
    load = os.getloadavg()[0]
    versions = []
    for package in ("onnxruntime", "pyoidn"):
        try:
            versions.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            versions.append(f"{package} not installed")
    print(f"command: {shlex.join(sys.orig_argv)}")
    print(f"date:    {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(f"cpu:     {describe_machine()}")
    print(f"with:    {', '.join(versions)}, device {args.device}, tile {args.tile or 'automatic'}")
    print(f"load:    1-minute load average {load:.2f} before the run"
          + ("" if PROC_STAT.exists() else "; other processes not watched (no /proc/stat)"))
    print(f"runs:    {', '.join(map(display_name, methods))} taking turns, {args.rounds} rounds per size, "
          f"{args.frames} frame(s) per process", flush=True)
    return load


def run_rounds(size: str, frames: list[Path], methods: list[str], args: argparse.Namespace,
               busy_rounds: list[tuple[float, str]]) -> dict[str, list[dict]]:
    """Every method once per round, always in the same order; a round where other processes used the
    CPU is added to ``busy_rounds`` as (their cores, the busiest of them)."""
    turns: dict[str, list[dict]] = {method: [] for method in methods}
    for round_number in range(1, args.rounds + 1):
        before = CpuSnapshot.take() if PROC_STAT.exists() else None
        for method in methods:
            turns[method].append(run_isolated(method, frames, args.tile, args.device))
        latest = {method: turns[method][-1] for method in methods}
        times = ", ".join(display_name(m) + (f" {t['denoise_s']:.4g} s" if "denoise_s" in t else " failed")
                          for m, t in latest.items())
        line = f"{size} round {round_number}: {times} denoising"
        if before is not None:
            others, busiest = CpuSnapshot.take().others_since(before)
            line += f"; other processes {others:.2f} cores"
            if others > IDLE_OTHER_CORES:
                busy_rounds.append((others, busiest))
                warn(f"other processes used {others:.2f} cores in {size} round {round_number}"
                     + (f": {busiest}" if busiest else ""))
        print(line, flush=True)
    return turns


def print_table(results: list[tuple[str, dict[str, list[dict]]]]) -> None:
    """Medians over rounds, their ratios to OIDN's medians, and the largest peak memory."""
    print(f"{'size':<10} {'method':<20} {'process s':>9} {'x OIDN':>6} {'total s':>8} {'x OIDN':>6} "
          f"{'denoise s':>9} {'x OIDN':>6} {'peak MiB':>8}")
    for size, turns in results:
        medians = {method: {key: float(np.median([t[key] for t in ts])) for key in TIMES}
                   for method, ts in turns.items() if not any("error" in t for t in ts)}
        for method, ts in turns.items():
            errors = [t["error"] for t in ts if "error" in t]
            if errors:
                print(f"{size:<10} {display_name(method):<20} failed: {errors[0]}")
                continue
            cells = []
            for key, width in zip(TIMES, (9, 8, 9), strict=True):
                reference = medians.get("oidn", {}).get(key)
                ratio = f"{medians[method][key] / reference:6.2f}" if reference else f"{'-':>6}"
                cells.append(f"{medians[method][key]:{width}.4g} {ratio}")
            peak = max(t["peak_mib"] for t in ts)
            over = (f"  over the {PEAK_BUDGET_MIB / 1024:g} GiB budget"
                    if size == "3840x2160" and peak > PEAK_BUDGET_MIB else "")
            print(f"{size:<10} {display_name(method):<20} {' '.join(cells)} {peak:8.0f}{over}")


def warn(reason: str) -> None:
    print(f"WARNING: NOT AN IDLE MACHINE: {reason}", file=sys.stderr, flush=True)


def display_name(method: str) -> str:
    return Path(method).stem if method.endswith(".onnx") else method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="*", type=Path, default=[REPO / "examples" / "noisy.exr"])
    parser.add_argument("--sizes", default="1920x1080,3840x2160")
    parser.add_argument("--frames", type=int, default=3, help="frames per process (median is taken)")
    parser.add_argument("--rounds", type=int, default=3, help="turns of every method per size (median)")
    parser.add_argument("--models", default="all", help="comma-separated names/paths, or all shipped models")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE, help="default: the CLI's default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-oidn", action="store_true")
    parser.add_argument("--as-is", action="store_true", help="use the inputs unchanged as the frames")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.inputs, args.tile, args.device)))
        return
    missing = [p for p in args.inputs if not p.is_file()]
    if missing:
        sys.exit(f"benchmark: {missing[0]} not found; pass a multilayer EXR with all passes")
    if args.rounds < 1 or args.frames < 1:
        sys.exit("benchmark: --rounds and --frames must be at least 1")
    models = [str(m.path) for m in list_models()] if args.models == "all" else args.models.split(",")
    methods = models + ([] if args.no_oidn else ["oidn"])
    if not models:
        print("no shipped models found: timing OIDN only")
    load = print_header(args, methods)
    not_idle = []
    if load > IDLE_LOAD_LIMIT:
        not_idle.append(f"1-minute load average {load:.2f} > {IDLE_LOAD_LIMIT} before the run")
        warn(f"{not_idle[0]}; wait until `uptime` shows less")
    busy_rounds: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory(prefix="kprcan-bench-frames-") as scratch:
        plans = [("as-is", args.inputs)] if args.as_is else [
            (size, [synthesise(args.inputs[i % len(args.inputs)], *map(int, size.split("x")),
                               Path(scratch) / f"{size}_{i}.exr") for i in range(args.frames)])
            for size in args.sizes.split(",")]
        results = [(size, run_rounds(size, frames, methods, args, busy_rounds)) for size, frames in plans]
    if busy_rounds:
        cores, busiest = max(busy_rounds)
        not_idle.append(f"other processes used up to {cores:.2f} cores, in {len(busy_rounds)} of "
                        f"{len(plans) * args.rounds} rounds" + (f" ({busiest})" if busiest else ""))
    if not_idle:
        warn(f"{'; '.join(not_idle)}: the figures are not valid")
        print(f"*** NOT AN IDLE MACHINE: {'; '.join(not_idle)}; these figures are not valid ***")
    print_table(results)


if __name__ == "__main__":
    main()
