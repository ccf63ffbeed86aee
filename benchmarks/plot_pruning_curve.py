"""Plot fast's pruning curve: PSNR at 16 and 64 spp against GFLOP per megapixel, with each point's seconds
per 1080p frame, beside `quality` and OIDN.

    .venv/bin/python benchmarks/plot_pruning_curve.py [--data benchmarks/results/pruning_curve.json]
                                                      [-o docs/images/pruning_curve.png]

The points are measurements recorded in the JSON file (with their date, test views and hardware); this
script only draws them. Needs matplotlib (``pip install -e ".[train]"``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SAMPLE_COUNTS = (16, 64)
X_TICKS = (50, 75, 100, 150, 200, 300)


def load_curve(path: Path) -> dict:
    curve = json.loads(path.read_text())
    psnr = {f"psnr_{spp}spp" for spp in SAMPLE_COUNTS}
    entries = [(f"point {p.get('label', '?')!r}", p, {"gflop_per_mp", "denoise_s", "label", *psnr})
               for p in curve.get("points", [])] + [("oidn", curve.get("oidn", {}), {"denoise_s", *psnr})]
    if len(entries) == 1:
        raise ValueError(f"{path}: no points")
    for what, entry, keys in entries:
        missing = keys - entry.keys()
        if missing:
            raise ValueError(f"{path}: {what} lacks {', '.join(sorted(missing))}")
    return curve


def plot(curve: dict, output: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    points, oidn = curve["points"], curve["oidn"]
    figure, axes = plt.subplots(1, len(SAMPLE_COUNTS), figsize=(11, 4.2), constrained_layout=True)
    for axis, spp in zip(axes, SAMPLE_COUNTS, strict=True):
        key = f"psnr_{spp}spp"
        pruning = [p for p in points if p.get("kind") == "pruning"]
        axis.plot([p["gflop_per_mp"] for p in pruning], [p[key] for p in pruning], "o-", color="tab:blue",
                  label="fast, pruning steps")
        for point in points:
            style = "s" if point.get("kind") == "shipped" else "o"
            axis.plot(point["gflop_per_mp"], point[key], style, color="tab:orange" if style == "s" else
                      "tab:blue")
            # the pruning steps sit close together: each point's label offset (points) is in the data
            axis.annotate(f"{point.get('tag', point['label'])}: {point['denoise_s']:.2f} s",
                          (point["gflop_per_mp"], point[key]), textcoords="offset points",
                          xytext=tuple(point.get("label_offset", (5, 5))), fontsize=7)
        axis.axhline(oidn[key], color="tab:green", linestyle="--",
                     label=f"OIDN ({oidn['denoise_s']:.2f} s)")
        axis.set_xscale("log")
        axis.set_xticks(X_TICKS, [str(tick) for tick in X_TICKS])
        axis.minorticks_off()
        axis.set_xlabel("GFLOP per megapixel (log scale)")
        axis.set_ylabel(f"mean PSNR at {spp} spp (dB)")
        axis.set_title(f"{spp} spp")
        axis.margins(y=0.15)
        axis.grid(True, alpha=0.3)
        axis.legend(loc="center", fontsize=8)
    figure.suptitle("fast's pruning curve; labels: seconds to denoise a 1080p frame (2-core CPU)",
                    fontsize=10)
    output.parent.mkdir(parents=True, exist_ok=True)
    temp = output.with_name(f".{output.name}.{os.getpid()}.tmp")  # never a half-written PNG
    try:
        figure.savefig(temp, format="png", dpi=110)
        os.replace(temp, output)
    finally:
        temp.unlink(missing_ok=True)
        plt.close(figure)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO / "benchmarks" / "results" / "pruning_curve.json")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "images" / "pruning_curve.png")
    args = parser.parse_args(argv)
    try:
        curve = load_curve(args.data)
    except (OSError, ValueError) as error:
        print(f"plot_pruning_curve: {error}", file=sys.stderr)
        return 2
    print(plot(curve, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
