"""Denoising EXR files: every view layer that has the passes, written next to everything else in the file."""

from __future__ import annotations

import enum
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .claims import claim
from .errors import DenoiserError
from .exr import ExrImage, check_exr_file, read_exr, stale_temporaries, temp_path_for, write_exr_in_place
from .inference import DEFAULT_TILE, Denoiser, DenoiseResult, load_model
from .memory import release_freed_memory

log = logging.getLogger("kprcan")

NOISY_PASS = "Noisy Image"
DIFFUSE_PASS = "Denoised Diffuse"
SPECULAR_PASS = "Denoised Specular"


def same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


# Folders of special files: an output there (/dev/stdout when it is redirected to a file) would be
# renamed over the special entry itself.
_SYSTEM_FOLDERS = (Path("/dev"), Path("/proc"), Path("/sys"))


def check_output_path(input_path: Path, output_path: Path, overwrite: bool) -> None:
    """Refuse, before any work, outputs that are the input, a folder, something other than a regular file
    (FIFO, device, socket; through symlinks too), or that exist without ``overwrite``."""
    if same_file(input_path, output_path):
        raise DenoiserError(f"{output_path}: output is the input file; choose another output path")
    if output_path.is_dir():
        raise DenoiserError(f"{output_path}: is a folder; give an output file name")
    special = _not_a_regular_file(output_path)
    if special:
        raise DenoiserError(f"{output_path}: {special}; outputs are written only as regular files (give a "
                            "file path)")
    if output_path.exists() and not overwrite:
        raise DenoiserError(f"{output_path}: exists (use --overwrite to replace it)")


def _not_a_regular_file(path: Path) -> str | None:
    """Why ``path`` cannot be an output although it is no folder: it exists (followed through symlinks)
    and is not a regular file, or it lies in a system folder. None when it is fine."""
    folder = Path(os.path.abspath(path)).parent
    if any(folder == system or system in folder.parents for system in _SYSTEM_FOLDERS):
        return f"is in the system folder {folder}"
    try:
        mode = path.stat().st_mode
    except OSError:  # absent or a symlink to nothing (os.replace puts a file in its place), or a folder
        return None  # that cannot be written to, which temp_path_for reports
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return "is " + next((name for test, name in kinds if test(mode)), "a special file")


def denoisable_layers(image: ExrImage, denoiser: Denoiser) -> list[str]:
    """View layers with every pass the model needs; the others are reported (warning or error)."""
    ready, problems = [], []
    for layer in image.layers:
        available = image.canonical_passes(layer)
        missing = denoiser.missing_passes(available)
        if not missing:
            ready.append(layer)
        elif available:  # a layer of unrelated channels (no Blender passes) is not worth a message
            problems.append(denoiser.missing_message(missing, f"view layer {layer!r}" if layer else "image"))
    if not ready:
        detail = problems[0] if problems else (
            "no Blender render passes found (render to OpenEXR MultiLayer with the light passes and "
            "Denoising Data enabled)")
        raise DenoiserError(f"{image.path}: {detail}")
    for problem in problems:
        log.warning("%s: %s; layer left as is", image.path, problem)
    for layer in ready:
        passes = [p for p in image.layer_passes(layer).values() if p.canonical]
        windows = {p.name: (p.size, _data_window(image, p.part)) for p in passes}
        if len(set(windows.values())) > 1:
            listing = ", ".join(f"{name} {w}x{h} at {origin}" for name, ((w, h), origin) in windows.items())
            raise DenoiserError(f"{image.path}: passes of view layer {layer!r} have different sizes "
                                f"(data windows differ): {listing}")
    return ready


def _data_window(image: ExrImage, part: int) -> tuple[int, int]:
    window = image.parts[part].header.get("dataWindow") if part < len(image.parts) else None
    return (int(window[0][0]), int(window[0][1])) if window is not None else (0, 0)


# denoise_image's per-layer hook: (layer, canonical passes, per-frame result) -> (result to write, extra
# passes {name: (components, (H, W, C) pixels)} to add to the layer); temporal mode (shot.py) is one.
Refine = Callable[[str, dict, DenoiseResult], tuple[DenoiseResult, dict[str, tuple[list[str], np.ndarray]]]]


def denoise_image(image: ExrImage, denoiser: Denoiser, tile: int = DEFAULT_TILE,
                  progress: Callable[[float], None] | None = None,
                  cancel: Callable[[], bool] | None = None, refine: Refine | None = None) -> list[str]:
    """Denoise ``image`` in place (see denoise_file for what changes); returns the layers denoised.

    Every pass the denoiser does not write keeps its pixels exactly (NaN/Inf included): only copies of
    what the networks read are sanitised, and what it writes is finite."""
    layers = denoisable_layers(image, denoiser)
    held_bytes = sum(p.pixels.nbytes for p in image.passes)  # for the memory budget: the whole file
    for index, layer in enumerate(layers):
        def layer_progress(fraction: float, index: int = index) -> None:
            if progress is not None:
                progress((index + fraction) / len(layers))

        where = ": ".join(w for w in (str(image.path or ""), f"view layer {layer!r}" if layer else "") if w)
        canonical = image.canonical_passes(layer)
        # the per-frame parts are kept only for a refine hook that reads them (temporal mode)
        result = denoiser.denoise(canonical, tile, layer_progress, cancel, where=where,
                                 keep_parts=refine is not None, held_bytes=held_bytes)
        extra = {}
        if refine is not None:
            result, extra = refine(layer, canonical, result)
        passes = image.layer_passes(layer).values()
        combined = next((p for p in passes if p.canonical == "combined"), None)
        if combined is None:  # only Noisy Image in the file: the denoised beauty becomes a new Combined
            noisy = next(p for p in passes if p.canonical == "noisy_image")
            combined = image.set_pass(layer, "Combined", noisy.components, noisy.hwc.copy(), noisy.part)
        if image.find(layer, NOISY_PASS) is None:  # keep Blender's own noisy pass when present
            # set_pass takes Combined's very array (no copy); Combined gets a new one below
            image.set_pass(layer, NOISY_PASS, combined.components, combined.hwc, combined.part)
        channels = combined.pixels.shape[0]
        combined.pixels = np.ascontiguousarray(result.beauty[..., :channels].transpose(2, 0, 1))
        image.set_pass(layer, DIFFUSE_PASS, "RGB", result.diffuse, combined.part)
        image.set_pass(layer, SPECULAR_PASS, "RGB", result.specular, combined.part)
        for name, (components, pixels) in extra.items():
            image.set_pass(layer, name, components, pixels, combined.part)
        del result
    for part in image.parts:
        part.header["kprcan.model"] = denoiser.info.name
    return layers


def denoise_file(input: str | os.PathLike, output: str | os.PathLike,
                 model: str | os.PathLike | Denoiser | None = None, device: str = "auto",
                 tile: int = DEFAULT_TILE, overwrite: bool = False,
                 progress: Callable[[float], None] | None = None, *,
                 cancel: Callable[[], bool] | None = None, half: bool = False,
                 refine: Refine | None = None) -> Path:
    """Denoise a multilayer EXR into ``output``; returns the output path.

    The output keeps every part, layer, pass and channel of the input. In each denoised view layer
    ``Combined`` holds the denoised beauty, the noisy one is kept as ``Noisy Image`` (the input's own
    ``Noisy Image`` when it has one), and ``Denoised Diffuse`` / ``Denoised Specular`` are added. The file
    is written atomically; on any error no output file is left behind. ``model`` may be an already loaded
    Denoiser (for sequences). Nothing is done when checks fail: paths first, then model, then passes.
    """
    input_path, output_path = Path(input), Path(output)
    check_exr_file(input_path)
    check_output_path(input_path, output_path, overwrite)
    # what earlier frames freed (finished or failed) goes back to the system before this one allocates;
    # before the temp file exists, so that a signal landing in it leaves no temp file behind
    release_freed_memory()
    temp = temp_path_for(output_path)  # proves the folder writable before any work
    try:
        denoiser = model if isinstance(model, Denoiser) else load_model(model, device)
        image = read_exr(input_path)
        denoise_image(image, denoiser, tile, progress, cancel, refine)
        write_exr_in_place(image, temp, half=half, shown_as=output_path)
        del image
        if output_path.exists() and not overwrite:  # appeared while we worked (another process)
            raise DenoiserError(f"{output_path}: exists (use --overwrite to replace it)")
        os.replace(temp, output_path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return output_path


class Claimed(enum.Enum):
    """What denoise_claimed did with one output."""

    WRITTEN = "written"
    DONE_ELSEWHERE = "done by another worker"
    HELD_ELSEWHERE = "held by another worker"


def denoise_claimed(input: Path, output: Path, denoiser: Denoiser, *, tile: int = DEFAULT_TILE,
                    overwrite: bool = False, half: bool = False,
                    progress: Callable[[float], None] | None = None, held_before: bool = False) -> Claimed:
    """denoise_file under a claim on ``output`` (claims.claim), for workers sharing a sequence.

    HELD_ELSEWHERE while another live worker holds the claim (ask again later, with ``held_before``);
    DONE_ELSEWHERE when the output exists and is not to be redone: without ``overwrite``, or when the
    worker that held it when we last looked released it (it finished; one whose claim went stale did not).
    Under the claim no one else writes ``output``, so temp files of it left by killed runs are removed.
    """
    held = claim(output)
    if held is None:
        return Claimed.HELD_ELSEWHERE
    with held:
        if output.exists() and (not overwrite or (held_before and not held.took_over)):
            return Claimed.DONE_ELSEWHERE
        remove_stale_temporaries(output)
        denoise_file(input, output, denoiser, tile=tile, overwrite=overwrite, progress=progress, half=half)
    return Claimed.WRITTEN


def remove_stale_temporaries(output: Path) -> None:
    """Remove temp files of ``output`` left by stopped runs; only under a claim that covers ``output``."""
    for temp in stale_temporaries(output):
        log.info("removing %s, left by a run that was stopped", temp)
        temp.unlink(missing_ok=True)
