"""Score denoisers against references: kprcan models (ONNX, through denoiser_core) and Intel OIDN.

    python -m training.evaluate --data data/renders/val --models fast [other.onnx ...] --spp 4 16 64 \
        --out models/eval
    python -m training.evaluate --data data/renders/val --models fast --spp 16 --error-budget

``--data`` holds one folder per view with ``reference.exr`` and noisy renders named ``spp<N>.exr``
(or the two half-sample renders ``spp<N>_a.exr`` / ``spp<N>_b.exr``, averaged here as the full-sample
input — the layout ``python -m training.datagen`` writes for its validation split).

Metrics (training/metrics.py): relMSE on linear HDR, PSNR / SSIM / FLIP on clamped sRGB. Writes
``results.csv`` (one row per view, spp and method), ``results.md`` (means per spp and method, and per
view) and ``crops.png`` (noisy | OIDN | each model | reference, one row per view).

``--error-budget`` asks where a model's error comes from instead: the denoised beauty is
``diffuse_color * diffuse + specular + residual`` (denoiser_core.passes.recombine); the network denoises
diffuse light and specular radiance, the residual (emission, environment and what the light passes do not
cover) and the diffuse colour are carried through from the noisy input. For each view it prints the
model's PSNR and the PSNR it would reach if one of those terms were the reference's: a large rise
means that term holds most of the error. A residual gain is error no network output can remove: the noisy
residual passes straight through. For a model trained with ``denoise_residual`` the residual is part of
its specular term, or of its volume term for a model with volume light apart (a 'ref volume' column;
the 'ref residual' column then equals 'model'). One table per model and sample count
(default 16 spp); nothing is written.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from denoiser_core import load_model, read_exr
from denoiser_core.images import psnr, to_srgb, to_uint8, write_png
from denoiser_core.passes import decompose, recombine, sanitize
from training.datagen.exr_io import read_passes
from training.datagen.quality import find_fireflies
from training.metrics import all_metrics

NOISY_NAME = re.compile(r"^spp(\d+)(?:_([ab]))?\.exr$")
METRICS = ("relmse", "psnr", "ssim", "flip")


def find_views(root: Path) -> list[Path]:
    views = sorted(p.parent for p in root.rglob("reference.exr"))
    if not views:
        raise SystemExit(f"error: no view folders with reference.exr under {root}")
    return views


def noisy_inputs(view: Path) -> dict[int, list[Path]]:
    """spp -> the file(s) whose mean is the noisy input at that sample count."""
    found: dict[int, list[Path]] = defaultdict(list)
    for path in sorted(view.glob("spp*.exr")):
        match = NOISY_NAME.match(path.name)
        if match:
            found[int(match.group(1))].append(path)
    return dict(found)


def first_layer_passes(path: Path) -> dict[str, np.ndarray]:
    passes = read_passes(str(path))
    if "combined" not in passes:
        raise SystemExit(f"error: {path} has no Combined pass")
    return passes


def mean_passes(paths: list[Path]) -> dict[str, np.ndarray]:
    """Average of half-sample renders: the full-sample estimate (each pass is a sample mean)."""
    loaded = [first_layer_passes(p) for p in paths]
    return {name: sum(p[name] for p in loaded) / len(loaded) for name in loaded[0]}


def samples_of(path: Path) -> int:
    """Samples per pixel Cycles recorded in the file's header (``cycles.<layer>.samples``)."""
    header = read_exr(path).parts[0].header
    found = [int(value) for key, value in header.items() if key.startswith("cycles.") and
             key.endswith(".samples")]
    if not found:
        raise SystemExit(f"error: {path} does not record its sample count (cycles.*.samples)")
    return found[0]


def reference_noise_psnr(view: Path, inputs: dict[int, list[Path]]) -> float | None:
    """PSNR the reference's own noise allows, estimated from the two halves of the largest sample count.

    For independent halves A, B of n/2 samples, E[(A - B)^2] / 2 is the variance of one half; Monte
    Carlo variance falls as 1/samples, so the reference's variance is that times (n/2) / reference
    samples. Measured on clamped sRGB like PSNR (a first-order estimate). None without two halves.
    """
    pairs = [paths for paths in inputs.values() if len(paths) == 2]
    if not pairs:
        return None
    half_a, half_b = max(pairs, key=lambda paths: samples_of(paths[0]))
    a = to_srgb(first_layer_passes(half_a)["combined"])
    b = to_srgb(first_layer_passes(half_b)["combined"])
    variance = float(np.mean((a - b) ** 2)) / 2 * samples_of(half_a) / samples_of(view / "reference.exr")
    return 10 * np.log10(1 / max(variance, 1e-12))


def oidn_denoise(passes: dict[str, np.ndarray]) -> np.ndarray:
    import pyoidn

    color = np.ascontiguousarray(np.maximum(sanitize(passes["combined"][..., :3]), 0.0))
    albedo = np.ascontiguousarray(np.clip(sanitize(passes["denoising_albedo"][..., :3]), 0.0, 1.0))
    normal = np.ascontiguousarray(np.clip(sanitize(passes["denoising_normal"][..., :3]), -1.0, 1.0))
    return pyoidn.denoise(color, albedo, normal, hdr=True, quality="high")


def crop_box(reference: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the size×size window with the most detail (gradient energy) in the reference."""
    h, w = reference.shape[:2]
    size = min(size, h, w)
    luminance = to_srgb(reference).mean(axis=2)
    energy = np.abs(np.diff(luminance, axis=0))[:, :-1] + np.abs(np.diff(luminance, axis=1))[:-1, :]
    best, corner = -1.0, (0, 0)
    for y in range(0, h - size + 1, max(1, size // 4)):
        for x in range(0, w - size + 1, max(1, size // 4)):
            score = float(energy[y:y + size - 1, x:x + size - 1].sum())
            if score > best:
                best, corner = score, (y, x)
    return corner


def evaluate(data: Path, model_names: list[str], spps: list[int] | None, use_oidn: bool,
             crop_spp: int, device: str = "auto") -> tuple[list[dict], list[np.ndarray], dict]:
    denoisers = {}
    for name in model_names:
        denoiser = load_model(name, device)
        column = denoiser.info.name  # columns named as the models are, or as their files where names clash
        taken = {"noisy", "oidn", *denoisers}
        if column in taken:
            column = Path(name).stem
        if column in taken:
            raise SystemExit(f"error: two models named {column!r}: rename one of the .onnx files")
        denoisers[column] = denoiser
    rows, crops, reference_checks = [], [], {}
    for view in find_views(data):
        reference = first_layer_passes(view / "reference.exr")["combined"][..., :3]
        inputs = noisy_inputs(view)
        chosen = [s for s in sorted(inputs) if spps is None or s in spps]
        for spp in chosen:
            passes = mean_passes(inputs[spp])
            results = {"noisy": (passes["combined"][..., :3], 0.0)}
            if use_oidn:
                start = time.perf_counter()
                results["oidn"] = (oidn_denoise(passes), time.perf_counter() - start)
            for name, denoiser in denoisers.items():
                start = time.perf_counter()
                results[name] = (denoiser.denoise(passes).beauty[..., :3], time.perf_counter() - start)
            for method, (image, seconds) in results.items():
                rows.append({"view": view.name, "kind": scene_kind(view), "spp": spp, "method": method,
                             "seconds": seconds, **all_metrics(image, reference)})
            if spp == crop_spp or (crop_spp not in chosen and spp == chosen[len(chosen) // 2]):
                y, x = crop_box(reference, 96)
                window = [to_srgb(img[y:y + 96, x:x + 96]) for img, _ in results.values()]
                crops.append(np.concatenate(window + [to_srgb(reference[y:y + 96, x:x + 96])], axis=1))
        reference_checks[view.name] = (reference_noise_psnr(view, inputs),
                                       100.0 * float(find_fireflies(reference).mean()))
        print(f"  {view.name}: {len(chosen)} sample counts", flush=True)
    return rows, crops, reference_checks


def summarise(rows: list[dict], reference_checks: dict[str, tuple[float | None, float]]) -> str:
    """Markdown: mean of each metric per (spp, method), then PSNR per view, spp and method, with the
    PSNR each view's reference noise allows (a denoiser scored near it is limited by the reference) and
    the reference's firefly pixels in % (training.datagen.quality; packing drops views above 0.2 %)."""
    groups: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["spp"], row["method"])].append(row)
    lines = ["| spp | method | relMSE ↓ | PSNR dB ↑ | SSIM ↑ | FLIP ↓ | seconds |",
             "|---|---|---|---|---|---|---|"]
    for (spp, method), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "noisy")):
        means = {m: float(np.mean([r[m] for r in group])) for m in (*METRICS, "seconds")}
        lines.append(f"| {spp} | {method} | {means['relmse']:.4f} | {means['psnr']:.2f} "
                     f"| {means['ssim']:.4f} | {means['flip']:.4f} | {means['seconds']:.2f} |")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines += ["", "PSNR (dB) per view; *reference noise* is the PSNR the reference's own noise allows "
              "(estimated from the noisy halves), *fireflies* the reference's isolated spike pixels in % "
              "(a view above 0.2 % holds light paths the inputs hardly sample; no method can match it):", "",
              "| view | spp | " + " | ".join(methods) + " | reference noise | fireflies % |",
              "|---|---|" + "---|" * (len(methods) + 2)]
    per_view: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for row in rows:
        per_view[(row["view"], row["spp"])][row["method"]] = row["psnr"]
    for (view, spp), values in sorted(per_view.items()):
        cells = " | ".join(f"{values.get(m, float('nan')):.2f}" for m in methods)
        noise, fireflies = reference_checks.get(view, (None, float("nan")))
        lines.append(f"| {view} | {spp} | {cells} | {'n/a' if noise is None else f'{noise:.1f}'} "
                     f"| {fireflies:.2f} |")
    return "\n".join(lines + kind_table(rows, methods)) + "\n"


def kind_table(rows: list[dict], methods: list[str]) -> list[str]:
    """Markdown lines: mean PSNR per scene kind (scene.json's ``kind``), spp and method, and each
    method's difference to OIDN when OIDN was scored."""
    per_kind: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        per_kind[(row.get("kind") or "?", row["spp"])][row["method"]].append(row["psnr"])
    against = [m for m in methods if m not in ("noisy", "oidn")] if "oidn" in methods else []
    lines = ["", "PSNR (dB) per scene kind (mean over its views)" + (", and each model minus OIDN" if against
                                                                    else "") + ":", "",
             "| kind | spp | views | " + " | ".join(methods + [f"{m} − oidn" for m in against]) + " |",
             "|---|---|---|" + "---|" * (len(methods) + len(against))]
    for (kind, spp), values in sorted(per_kind.items()):
        means = {m: float(np.mean(values[m])) if values.get(m) else float("nan") for m in methods}
        cells = [f"{means[m]:.2f}" for m in methods] + [f"{means[m] - means['oidn']:+.2f}" for m in against]
        lines.append(f"| {kind} | {spp} | {len(values[methods[0]])} | " + " | ".join(cells) + " |")
    return lines


BUDGET_TERMS = ("diffuse", "specular", "volume", "residual", "diffuse_color")


def view_budget(denoiser, view: Path, spp: int) -> dict[str, float]:
    """PSNR (clamped sRGB) of noisy, model and model-with-one-reference-term for one view."""
    reference = first_layer_passes(view / "reference.exr")
    inputs = noisy_inputs(view)
    if spp not in inputs:
        raise SystemExit(f"error: {view} has no {spp} spp input (has {sorted(inputs)})")
    noisy = mean_passes(inputs[spp])
    result = denoiser.denoise(noisy)
    # split as the model was trained: with denoise_residual the residual is inside its specular (or
    # volume) term
    flags = {"denoise_residual": denoiser.info.denoise_residual,
             "demodulate_specular": denoiser.info.demodulate_specular,
             "separate_volume": denoiser.info.separates_volume}
    parts, truth = decompose(noisy, **flags), decompose(reference, **flags)
    model_terms = {"diffuse": result.outputs["diffuse_denoised"],
                   "specular": result.outputs["specular_denoised"], "specular_color": parts.specular_color,
                   "volume": result.outputs.get("volume_denoised"),
                   # the colour the core multiplied back: the render's, or a model's denoised one
                   "residual": parts.residual, "diffuse_color": result.parts.diffuse_color}
    target = to_srgb(reference["combined"][..., :3])

    def score(terms: dict[str, np.ndarray]) -> float:  # the core's own recombination, terms swapped in
        carried = replace(parts, diffuse_color=terms["diffuse_color"], residual=terms["residual"],
                          specular_color=terms["specular_color"])
        return psnr(to_srgb(recombine(carried, terms["diffuse"], terms["specular"], terms["volume"])), target)

    budget = {"noisy": psnr(to_srgb(noisy["combined"][..., :3]), target), "model": score(model_terms)}
    for term in BUDGET_TERMS:
        if term == "volume" and parts.volume is None:
            continue
        swapped = {term: getattr(truth, term)}
        if term == "specular":  # demodulated specular light is the reference's light under its own colour
            swapped["specular_color"] = truth.specular_color
        budget[f"ref {term}"] = score({**model_terms, **swapped})
    return budget


def scene_kind(view: Path) -> str:
    scene = view / "scene.json"
    return json.loads(scene.read_text()).get("kind", "") if scene.is_file() else ""


def budget_table(rows: dict[str, dict[str, float]], kinds: dict[str, str]) -> str:
    columns = list(next(iter(rows.values())))
    lines = ["| view | kind | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for name, budget in rows.items():
        lines.append(f"| {name} | {kinds[name]} | " + " | ".join(f"{budget[c]:.2f}" for c in columns) + " |")
    means = {c: float(np.mean([b[c] for b in rows.values()])) for c in columns}
    lines.append("| mean | | " + " | ".join(f"{means[c]:.2f}" for c in columns) + " |")
    return "\n".join(lines)


def print_error_budgets(data: Path, model_names: list[str], spps: list[int], device: str) -> None:
    views = find_views(data)
    kinds = {view.name: scene_kind(view) for view in views}
    for name in model_names:
        denoiser = load_model(name, device)
        for spp in spps:
            rows = {view.name: view_budget(denoiser, view, spp) for view in views}
            print(f"PSNR dB at {spp} spp, model {denoiser.info.name!r}; 'ref X': X taken from the reference")
            print(budget_table(rows, kinds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="folder of view folders (reference.exr + spp*.exr)")
    parser.add_argument("--models", nargs="*", default=[], help="model names (bundled) or .onnx paths")
    parser.add_argument("--spp", type=int, nargs="*", help="sample counts to score (default: all found)")
    parser.add_argument("--no-oidn", action="store_true", help="skip Intel OIDN")
    parser.add_argument("--crop-spp", type=int, default=16, help="sample count shown in crops.png")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("eval"),
                        help="folder for results.csv/.md, crops.png")
    parser.add_argument("--error-budget", action="store_true",
                        help="print where each model's error comes from instead (see error_budget)")
    args = parser.parse_args(argv)
    if args.error_budget:
        if not args.models:
            parser.error("--error-budget needs --models")
        print_error_budgets(args.data, args.models, args.spp or [16], args.device)
        return 0
    rows, crops, reference_checks = evaluate(args.data, args.models, args.spp, not args.no_oidn,
                                            args.crop_spp, args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = summarise(rows, reference_checks)
    (args.out / "results.md").write_text(table)
    if crops:
        width = max(c.shape[1] for c in crops)
        padded = [np.pad(c, ((0, 2), (0, width - c.shape[1]), (0, 0))) for c in crops]
        write_png(args.out / "crops.png", to_uint8(np.concatenate(padded, axis=0)))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
