"""Render and denoise a .blend from the command line.

Blender::

    blender -b scene.blend --python-exit-code 1 -P denoise.py -- --frames 1-10 --samples 64 \
        --output //denoised/ [--model NAME|PATH] [--device auto|cpu|cuda|...] [--png] [--temporal]

Python with the ``bpy`` module (pip install bpy)::

    python denoise.py scene.blend -- --frames 1-10 --samples 64 --output //denoised/

Turns on the passes the model needs, renders each frame to a float multilayer EXR, denoises it and writes
``<output>/<blend name>_<frame>.exr`` (every pass kept; Combined denoised; Denoised Diffuse / Specular
added) and with ``--png`` also a PNG through the scene's colour management. With ``--temporal`` every
frame is rendered first, then the frames are denoised in order as one shot (docs/temporal.md). Problems
end the run with a one-line error and exit status 2 (bad input) or 1 (failure); ``--python-exit-code 1``
makes Blender itself exit non-zero on unexpected Python errors too.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = "kprcan_denoise_script"   # this folder imported as a package (its name differs per install)


class UsageError(Exception):
    """A bad command line: one line on stderr, exit status 2."""


def script_arguments(argv: list[str]) -> tuple[str | None, list[str]]:
    """(.blend given before ``--`` when run by plain Python, options after ``--``).

    Under Blender everything before ``--`` is Blender's own. Run by Python (``argv[0]`` is this file),
    anything there but the .blend would be silently ignored, so it is refused.
    """
    if "--" in argv:
        cut = argv.index("--")
        before, after = argv[:cut], argv[cut + 1:]
    else:
        before, after = argv, []
    blends = [arg for arg in before[1:] if arg.lower().endswith(".blend")]
    if before and Path(before[0]).resolve() == Path(__file__).resolve():
        stray = [arg for arg in before[1:] if arg not in blends[-1:]]
        if stray:
            raise UsageError(f"{stray[0]!r} before '--' would be ignored: put options after it, "
                             f"e.g. python denoise.py scene.blend -- {' '.join(stray)}")
    return (blends[-1] if blends else None), after


def parse_frames(text: str) -> list[int]:
    """``"1-10"``, ``"5"``, ``"1,3,7-9"`` -> sorted unique frame numbers."""
    frames: set[int] = set()
    for piece in text.replace(" ", "").split(","):
        start, dash, end = piece.partition("-")
        try:
            first = int(start)
            last = int(end) if dash else first
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad frame range {piece!r} (use e.g. 1-10 or 1,3,5)") from None
        if last < first:
            raise argparse.ArgumentTypeError(f"bad frame range {piece!r}: end before start")
        frames.update(range(first, last + 1))
    return sorted(frames)


class OneLineParser(argparse.ArgumentParser):
    """Errors as one line (argparse prints the whole usage first)."""

    def error(self, message: str):
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="denoise.py", description="Render and denoise with KPRCAN.")
    parser.add_argument("--frames", type=parse_frames,
                        help="frames to render, e.g. 1-10 or 1,4,9 (default: the scene's frame range)")
    parser.add_argument("--samples", type=int, help="Cycles samples per pixel (default: the scene's)")
    parser.add_argument("--output", default="//denoised/", help="output folder (// = next to the .blend)")
    parser.add_argument("--model", help="model name or .onnx path (default: the default model)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, directml, coreml, tensorrt")
    parser.add_argument("--tile", type=int, help="largest tile edge in pixels (default: chosen per image)")
    parser.add_argument("--png", action="store_true", help="also write a PNG (scene colour management)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--keep-noisy", action="store_true", help="keep the noisy EXR renders (_noisy.exr)")
    parser.add_argument("--temporal", action="store_true",
                        help="temporal mode: render every frame, then denoise them in frame order, each "
                             "blended with the previous one (turns the Vector pass on; needs Motion Blur "
                             "off)")
    return parser


def load_addon_package():
    """This folder as a package, so the add-on's modules (compat, render_setup, ...) can be reused."""
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACKAGE, HERE / "__init__.py",
                                                      submodule_search_locations=[str(HERE)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = module
        spec.loader.exec_module(module)
    if not (HERE / "denoiser_core").is_dir() and str(HERE.parent) not in sys.path:
        sys.path.append(str(HERE.parent))  # development checkout: the repo's top-level denoiser_core
    return sys.modules[PACKAGE]


def main(argv: list[str]) -> int:
    try:
        blend, options = script_arguments(argv)
        args = build_parser().parse_args(options)
    except UsageError as error:
        print(f"denoise.py: error: {error}", file=sys.stderr)
        return 2
    import bpy  # after argument parsing: --help works without Blender

    load_addon_package()
    headless = importlib.import_module(f"{PACKAGE}.headless")
    if blend and Path(bpy.data.filepath or "").resolve() != Path(blend).resolve():
        if not Path(blend).is_file():
            print(f"denoise.py: error: {blend}: no such .blend file", file=sys.stderr)
            return 2
        bpy.ops.wm.open_mainfile(filepath=str(Path(blend).resolve()))
    return headless.run(args)


if __name__ == "__main__":
    # sys.exit also ends Blender (-P) with this status; --python-exit-code 1 covers crashes before here
    sys.exit(main(sys.argv))
