"""The CLI's sub-commands (argument parsing and error reporting live in cli.py)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from tqdm import tqdm

from .claims import POLL_SECONDS
from .devices import available_devices
from .errors import DenoiserError
from .exr import ExrImage, check_exr_file, read_exr
from .inference import VARIANCE_INPUTS, load_model, missing_for, required_passes
from .models import ModelInfo, list_models, model_dirs, resolve_model
from .passes import missing_passes_hint
from .pipeline import Claimed, check_output_path, denoise_claimed
from .sequence import plan_jobs
from .shot import denoise_shot, plan_shot
from .temporal import frame_guides

log = logging.getLogger("kprcan")


class _LazyBar:
    """A tqdm bar created on the first update, so checks that fail early print no bar.

    Like tqdm's ``disable=None``, no bar is drawn when stderr is not a terminal (logs, render farms).
    """

    def __init__(self, enabled: bool, **options):
        self.enabled, self.options, self.bar = enabled, options, None

    def to(self, fraction: float) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = tqdm(file=sys.stderr, disable=None, **self.options)
        self.bar.update(round(fraction * self.bar.total) - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()




def run_denoise(args: argparse.Namespace) -> int:
    if args.temporal:
        return _run_temporal(args)
    jobs = plan_jobs(args.inputs, args.output)
    for source, target in jobs:  # every input and output checked before any model is loaded
        check_exr_file(source)
        check_output_path(source, target, overwrite=True)
    todo = [(s, t) for s, t in jobs if args.overwrite or not t.exists()]
    if len(todo) < len(jobs):
        log.info("skipping %d of %d frames whose output exists (use --overwrite to redo them)",
                 len(jobs) - len(todo), len(jobs))
    if not todo:
        return 0
    denoiser = load_model(args.model, args.device, memory_budget=args.max_memory)
    quiet = getattr(args, "quiet", False)
    frames = _LazyBar(not quiet and len(todo) > 1, total=len(todo), unit="frame", desc="denoise")
    first_failure, finished, elsewhere = 0, 0, 0
    pending, held_before = todo, set()
    while pending:  # frames other workers hold come back until they are done (by them, or by us)
        held = []
        for source, target in pending:
            outcome = _denoise_frame(source, target, denoiser, args, target in held_before,
                                     bar=not quiet and len(todo) == 1)
            if outcome is Claimed.HELD_ELSEWHERE:
                held.append((source, target))
                continue
            if isinstance(outcome, DenoiserError):
                if len(todo) == 1:
                    raise outcome
                log.error("%s", outcome.message)
                first_failure = first_failure or outcome.exit_code
            elif outcome is Claimed.DONE_ELSEWHERE:
                elsewhere += 1
            finished += 1
            frames.to(finished / len(todo))
        if held and not held_before:
            log.info("waiting for %d frame(s) other workers are denoising", len(held))
        held_before |= {target for _source, target in held}
        pending = held
        if pending:
            time.sleep(POLL_SECONDS)
    frames.close()
    if elsewhere:
        log.info("%d of %d frames were denoised by other workers", elsewhere, len(todo))
    return first_failure


def _run_temporal(args: argparse.Namespace) -> int:
    if len(args.inputs) != 1:
        raise DenoiserError("--temporal denoises one sequence at a time: give one shot_####.exr pattern")
    frames = plan_shot(args.inputs[0], args.output)
    for _number, source, target in frames:  # every input and output checked before any model is loaded
        check_exr_file(source)
        check_output_path(source, target, overwrite=True)
    info, first = resolve_model(args.model), read_exr(frames[0][1])
    for layer in first.layers:  # each layer that will be denoised needs the Vector pass
        passes = first.canonical_passes(layer)
        if passes and not missing_for(info, passes):
            frame_guides(passes)
    del first
    if not args.overwrite and all(target.exists() for _n, _s, target in frames):
        log.info("every frame's output exists (use --overwrite to redo them)")
        return 0
    denoiser = load_model(args.model, args.device, memory_budget=args.max_memory)
    bar = _LazyBar(not getattr(args, "quiet", False), total=100, unit="%", desc="denoise --temporal")
    started = time.perf_counter()
    try:
        written = denoise_shot(frames, denoiser, tile=args.tile, overwrite=args.overwrite, half=args.half,
                               progress=bar.to)
    finally:
        bar.close()
    log.info("%d of %d frames denoised in temporal mode (%.1f s)", written, len(frames),
             time.perf_counter() - started)
    return 0


def _denoise_frame(source: Path, target: Path, denoiser, args: argparse.Namespace, held_before: bool,
                   bar: bool) -> Claimed | DenoiserError:
    tiles = _LazyBar(bar, total=100, unit="%", desc=source.name, leave=False)
    started = time.perf_counter()
    try:
        outcome = denoise_claimed(source, target, denoiser, tile=args.tile, overwrite=args.overwrite,
                                  half=args.half, progress=tiles.to, held_before=held_before)
    except DenoiserError as error:
        return error
    finally:
        tiles.close()
    if outcome is Claimed.WRITTEN:
        log.info("%s -> %s (%.1f s)", source, target, time.perf_counter() - started)
    return outcome


def run_info(args: argparse.Namespace) -> int:
    image = read_exr(args.input)
    width, height = image.size()
    compressions = {str(p.compression).split(".")[-1].replace("_COMPRESSION", "") for p in image.parts}
    types = sorted({p.stored_as for p in image.passes})
    print(f"{image.path}: {width}x{height}, {len(image.parts)} part(s), "
          f"compression {', '.join(sorted(compressions))}, pixels {'/'.join(types)}")
    for layer in image.layers:
        print(f"view layer {layer!r}:" if layer else "channels without a view layer:")
        for exr_pass in image.layer_passes(layer).values():
            canonical = exr_pass.canonical or "(not used by the denoiser)"
            label = exr_pass.name or "(unnamed)"
            size = f"  {exr_pass.size[0]}x{exr_pass.size[1]}" if exr_pass.size != (width, height) else ""
            print(f"  {label:<24} {''.join(exr_pass.components):<5} -> {canonical}{size}")
    models = [resolve_model(args.model)] if args.model else list_models()
    if not models:
        print(f"no models installed (searched {', '.join(str(d) for d in model_dirs())})")
    for info in models:
        _print_model_check(info, image)
    return 0


def _print_model_check(info: ModelInfo, image: ExrImage) -> None:
    print(f"model {info.name} ({info.path.name}) needs: {', '.join(required_passes(info))}")
    if info.needs_variance:  # Denoiser.denoise refuses such a model on any render read from an EXR
        print(f"  not usable on Blender renders: it needs {', '.join(VARIANCE_INPUTS)} inputs, "
              "which Blender does not render")
        return
    for layer in image.layers:
        available = image.canonical_passes(layer)
        if available:
            missing = missing_for(info, available)
            status = "ready" if not missing else f"missing {missing_passes_hint(missing)}"
            print(f"  view layer {layer!r}: {status}")


def run_models(args: argparse.Namespace) -> int:
    models = list_models()
    print(f"devices: {', '.join(available_devices())}")
    print(f"model folders: {', '.join(str(d) for d in model_dirs())}")
    if not models:
        print("no models found")
    for info in models:
        print(f"{info.summary()}")
        print(f"  file: {info.path}")
        print(f"  needs: {', '.join(info.required_passes)}{' + variance' if info.needs_variance else ''}")
        if info.training_data:
            print(f"  trained on: {info.training_data}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from . import demo

    quiet = getattr(args, "quiet", False)
    bar = _LazyBar(not quiet, total=100, unit="%", desc="demo", leave=False)
    examples = Path(args.examples) if args.examples else demo.EXAMPLES
    try:
        result = demo.run_demo(examples, args.model, args.device, args.tile, progress=bar.to)
    finally:
        bar.close()
    print(f"model {result.model}: denoised in {result.seconds:.2f} s")
    print(f"PSNR vs reference (clamped sRGB): noisy {result.psnr_noisy:.2f} dB, "
          f"denoised {result.psnr_denoised:.2f} dB")
    print(f"wrote {result.denoised_exr} and {result.side_by_side_png} (noisy | denoised | reference)")
    return 0
