"""``kprcan demo``: denoise the example render shipped in ``examples/`` and compare with its reference."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DenoiserError
from .exr import ExrImage, read_exr
from .images import psnr, to_srgb, to_uint8, write_png
from .inference import DEFAULT_TILE, load_model
from .pipeline import NOISY_PASS, denoise_file

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@dataclass
class DemoResult:
    denoised_exr: Path
    side_by_side_png: Path
    psnr_noisy: float
    psnr_denoised: float
    seconds: float
    model: str


def beauty_of(image: ExrImage, prefer_noisy: bool) -> np.ndarray:
    """(H, W, 3) beauty of the first view layer that has one.

    ``prefer_noisy``: take ``Noisy Image`` when present (the raw path-traced estimate; Combined may hold
    Blender's own denoised result). Plain RGB(A) files (no layers) work too.
    """
    names = (NOISY_PASS, "Combined") if prefer_noisy else ("Combined",)
    for layer in image.layers:
        for name in names:
            found = image.find(layer, name)
            if found is not None:
                return found.hwc[..., :3]
    plain = image.find("", "")
    if plain is not None and plain.components[:3] == ["R", "G", "B"]:
        return plain.hwc[..., :3]
    raise DenoiserError(f"{image.path}: no Combined pass or RGB channels found")


def run_demo(examples: Path = EXAMPLES, model: str | None = None, device: str = "auto",
             tile: int = DEFAULT_TILE, progress: Callable[[float], None] | None = None) -> DemoResult:
    noisy_path, reference_path = examples / "noisy.exr", examples / "reference.exr"
    for needed in (noisy_path, reference_path):
        if not needed.is_file():
            raise DenoiserError(f"{needed} not found: the demo needs examples/noisy.exr (multilayer, all "
                                "passes) and examples/reference.exr (high-spp render of the same view)")
    out = examples / "out"
    denoiser = load_model(model, device)
    started = time.perf_counter()
    denoised_path = denoise_file(noisy_path, out / "denoised.exr", denoiser, tile=tile, overwrite=True,
                                 progress=progress)
    seconds = time.perf_counter() - started
    denoised_image = read_exr(denoised_path)
    noisy = to_srgb(beauty_of(denoised_image, prefer_noisy=True))
    denoised = to_srgb(beauty_of(denoised_image, prefer_noisy=False))
    reference = to_srgb(beauty_of(read_exr(reference_path), prefer_noisy=True))
    if reference.shape != noisy.shape:
        raise DenoiserError(f"{reference_path}: {reference.shape[1]}x{reference.shape[0]} differs from "
                            f"{noisy_path}: {noisy.shape[1]}x{noisy.shape[0]}")
    strip = np.concatenate([noisy, denoised, reference], axis=1)
    png = write_png(out / "side_by_side.png", to_uint8(strip))
    return DemoResult(denoised_path, png, psnr(noisy, reference), psnr(denoised, reference), seconds,
                      denoiser.info.name)
