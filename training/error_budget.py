"""Where a model's error comes from: PSNR with one component of its output swapped for the reference's.

    python training/error_budget.py --data data/renders/val --model fast --spp 16

The denoised beauty is ``diffuse_color * diffuse + specular + residual`` (denoiser_core.passes.recombine):
the network denoises diffuse light and specular radiance; the residual (emission, environment and what
the light passes do not cover) and the diffuse colour are carried through from the noisy input. For each
view this prints the model's PSNR, and the PSNR it would reach if one of those four terms were the
reference's: a large rise means that term holds most of the error. A residual gain is error no network
output can remove: the noisy residual passes straight through. For a model trained with
``denoise_residual`` the residual is part of its specular term (the 'ref residual' column then equals
'model').
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from denoiser_core import load_model  # noqa: E402
from denoiser_core.images import psnr, to_srgb  # noqa: E402
from denoiser_core.passes import decompose, recombine  # noqa: E402
from training.evaluate import find_views, first_layer_passes, mean_passes, noisy_inputs  # noqa: E402

TERMS = ("diffuse", "specular", "residual", "diffuse_color")


def view_budget(denoiser, view: Path, spp: int) -> dict[str, float]:
    """PSNR (clamped sRGB) of noisy, model and model-with-one-reference-term for one view."""
    reference = first_layer_passes(view / "reference.exr")
    inputs = noisy_inputs(view)
    if spp not in inputs:
        raise SystemExit(f"error: {view} has no {spp} spp input (has {sorted(inputs)})")
    noisy = mean_passes(inputs[spp])
    result = denoiser.denoise(noisy)
    # split as the model was trained: with denoise_residual the residual is inside its specular term
    flag = denoiser.info.denoise_residual
    parts, truth = decompose(noisy, flag), decompose(reference, flag)
    model_terms = {"diffuse": result.outputs["diffuse_denoised"],
                   "specular": result.outputs["specular_denoised"],
                   "residual": parts.residual, "diffuse_color": parts.diffuse_color}
    target = to_srgb(reference["combined"][..., :3])

    def score(terms: dict[str, np.ndarray]) -> float:  # the core's own recombination, terms swapped in
        carried = replace(parts, diffuse_color=terms["diffuse_color"], residual=terms["residual"])
        return psnr(to_srgb(recombine(carried, terms["diffuse"], terms["specular"])), target)

    budget = {"noisy": psnr(to_srgb(noisy["combined"][..., :3]), target), "model": score(model_terms)}
    for term in TERMS:
        budget[f"ref {term}"] = score({**model_terms, term: getattr(truth, term)})
    return budget


def scene_kind(view: Path) -> str:
    scene = view / "scene.json"
    return json.loads(scene.read_text()).get("kind", "") if scene.is_file() else ""


def table(rows: dict[str, dict[str, float]], kinds: dict[str, str]) -> str:
    columns = list(next(iter(rows.values())))
    lines = ["| view | kind | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for name, budget in rows.items():
        lines.append(f"| {name} | {kinds[name]} | " + " | ".join(f"{budget[c]:.2f}" for c in columns) + " |")
    means = {c: float(np.mean([b[c] for b in rows.values()])) for c in columns}
    lines.append("| mean | | " + " | ".join(f"{means[c]:.2f}" for c in columns) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="view folders (as for evaluate.py)")
    parser.add_argument("--model", default="fast", help="model name or .onnx path")
    parser.add_argument("--spp", type=int, default=16)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    denoiser = load_model(args.model, args.device)
    views = find_views(args.data)
    rows = {view.name: view_budget(denoiser, view, args.spp) for view in views}
    print(f"PSNR dB at {args.spp} spp, model {denoiser.info.name!r}; 'ref X': X taken from the reference")
    print(table(rows, {view.name: scene_kind(view) for view in views}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
