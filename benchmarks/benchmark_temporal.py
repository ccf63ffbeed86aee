"""Flicker and quality of temporal mode against per-frame denoising (kprcan and Intel OIDN).

Renders four small shots with pip bpy (cached; see training/datagen/sequences.py): a static shot whose
frames differ only in their sampling seed, a camera pan, a sphere moving across a textured wall and a cut.
Each is denoised per frame by a kprcan model, by the same model in temporal mode, and per frame by OIDN
(colour + albedo + normal, HDR, quality high). It prints, per shot and method, the mean PSNR of the
frames against their references (clamped sRGB) and the flicker: the mean over pixels of the temporal
standard deviation of the clamped sRGB frames (on the static shot all of it is error, since its reference
never changes).

    python benchmarks/benchmark_temporal.py [--model fast] [--frames 6] [--spp 16] [--cache .cache/sequences]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from denoiser_core.exr import read_exr
from denoiser_core.images import psnr, to_srgb
from denoiser_core.inference import load_model
from denoiser_core.temporal import TemporalSettings, filter_result, frame_guides
from training.datagen.sequences import SHOTS, render_shot

REPO = Path(__file__).resolve().parents[1]


def layer_passes(path: Path) -> dict[str, np.ndarray]:
    image = read_exr(path)
    return image.canonical_passes(image.layers[0])


def run_shot(noisy: list[Path], model, settings: TemporalSettings, with_oidn: bool) -> dict:
    """Beauty (H, W, 3) per frame for each method, and the share of pixels that used history."""
    outputs: dict[str, list[np.ndarray]] = {"noisy": [], "per-frame": [], "temporal": []}
    if with_oidn:
        from training.evaluate import oidn_denoise

        outputs["oidn"] = []
    history, used = None, []
    for path in noisy:
        passes = layer_passes(path)
        result = model.denoise(passes)
        filtered, step = filter_result(result, frame_guides(passes), history, settings)
        history = step.history
        used.append(step.history_fraction)
        outputs["noisy"].append(passes["combined"][..., :3])
        outputs["per-frame"].append(result.beauty[..., :3])
        outputs["temporal"].append(filtered.beauty[..., :3])
        if with_oidn:
            outputs["oidn"].append(oidn_denoise(passes)[..., :3])
    return {"outputs": outputs, "history_used": used}


def flicker(frames: list[np.ndarray]) -> float:
    """Mean over pixels and channels of the temporal standard deviation of the clamped sRGB frames."""
    return float(np.std(np.stack([to_srgb(f) for f in frames]), axis=0).mean())


def mean_psnr(frames: list[np.ndarray], references: list[np.ndarray]) -> float:
    if len(references) == 1:
        references = references * len(frames)
    return float(np.mean([psnr(to_srgb(f), to_srgb(r)) for f, r in zip(frames, references, strict=True)]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fast")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--spp", type=int, default=16)
    parser.add_argument("--shots", nargs="+", default=list(SHOTS), choices=SHOTS)
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "sequences")
    parser.add_argument("--no-oidn", action="store_true")
    args = parser.parse_args(argv)
    model = load_model(args.model, "cpu")
    settings = TemporalSettings()
    print(f"{'shot':<8} {'method':<10} {'PSNR dB':>8} {'flicker':>9}  history used per frame")
    for shot in args.shots:
        paths = render_shot(shot, args.cache, frames=args.frames, samples=args.spp)
        references = [layer_passes(p)["combined"][..., :3] for p in paths["reference"]]
        run = run_shot(paths["noisy"], model, settings, with_oidn=not args.no_oidn)
        for method, frames in run["outputs"].items():
            used = " ".join(f"{u:.2f}" for u in run["history_used"]) if method == "temporal" else ""
            quality = mean_psnr(frames, references)
            print(f"{shot:<8} {method:<10} {quality:8.2f} {flicker(frames):9.5f}  {used}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
