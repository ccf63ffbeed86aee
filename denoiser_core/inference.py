"""Running a model on canonical passes: decompose, tiled ONNX inference, recombine."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from .devices import CPU, providers_for, session_options
from .errors import DenoiserError
from .memory import release_freed_memory
from .models import (
    COLOUR_OUTPUT,
    KNOWN_OUTPUTS,
    VOLUME_OUTPUT,
    ModelInfo,
    check_graph,
    open_session,
    resolve_model,
)
from .native_output import captured_native_output
from .passes import (
    DECOMPOSITION_PASSES,
    FEATURE_PASSES,
    PASSES_USED_WHEN_PRESENT,
    Decomposition,
    all_finite,
    decompose,
    display_name,
    missing_passes,
    missing_passes_hint,
    recombine_radiance,
    sanitize_guide,
)
from .tiling import (
    AUTO_TILE,
    automatic_tile,
    axis_spans,
    check_output_shape,
    round_up,
    run_tiled,
    window_size,
)

log = logging.getLogger("kprcan")

VARIANCE_INPUTS = ("diffuse_variance", "specular_variance")
# Tiles chosen per image (tiling.automatic_tile): a 1080p frame runs as one window, larger frames in the
# fewest pixels whose windows keep the frame within tiling.MEMORY_BUDGET. A number is the largest tile edge.
DEFAULT_TILE = AUTO_TILE
# The pixels every DenoiseResult holds: name -> channels.
RESULT_CHANNELS = {"beauty": 4, "diffuse": 3, "specular": 3}
# How onnxruntime words a failed allocation (CPU arena, CUDA, std::bad_alloc).
_ALLOCATION_FAILED = re.compile(r"failed to allocate|out of memory|bad.alloc|alloc_failed", re.IGNORECASE)


@dataclass
class DenoiseResult:
    beauty: np.ndarray      # (H, W, 4) denoised RGBA (alpha of the noisy beauty)
    diffuse: np.ndarray     # (H, W, 3) DiffCol * denoised diffuse light
    specular: np.ndarray    # (H, W, 3) denoised specular radiance (specular_color * light when demodulated),
    #                         volume light included
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # raw network outputs, (H, W, 3)
    parts: Decomposition | None = None  # what the networks saw and what was carried through (recombine)
    nonfinite_inputs: int = 0   # NaN/Inf input values replaced by 0
    seconds: float = 0.0

    @classmethod
    def from_parts(cls, parts: Decomposition, outputs: dict[str, np.ndarray], **fields) -> DenoiseResult:
        """The result of the networks' ``outputs`` on ``parts``: beauty recombined, the parts as radiance.
        A model's denoised Diffuse Color (``diffuse_color_denoised``) replaces the render's in ``parts``;
        a model's denoised volume buffer (``volume_denoised``) is part of ``specular``."""
        if COLOUR_OUTPUT in outputs:
            parts = replace(parts, diffuse_color=outputs[COLOUR_OUTPUT])
        # the parts as radiance (specular too when demodulated)
        beauty, diffuse, specular = recombine_radiance(parts, outputs["diffuse_denoised"],
                                                       outputs["specular_denoised"],
                                                       outputs.get(VOLUME_OUTPUT))
        return cls(beauty=beauty, diffuse=diffuse, specular=specular, outputs=outputs, parts=parts, **fields)


def required_passes(info: ModelInfo) -> tuple[str, ...]:
    """Canonical passes a render must have: the model's list plus what the decomposition reads."""
    return tuple(dict.fromkeys((*info.required_passes, *DECOMPOSITION_PASSES, *FEATURE_PASSES)))


def missing_for(info: ModelInfo, available) -> list[str]:
    """Passes of ``required_passes(info)`` not in ``available`` (canonical names)."""
    available = set(available)
    if "noisy_image" in available:  # stands in for Combined (see Denoiser.denoise)
        available.add("combined")
    return missing_passes(available, required_passes(info))


class Denoiser:
    """A loaded model. Reusable and cheap to call many times; not safe to call from two threads at once."""

    def __init__(self, info: ModelInfo, session, memory_budget: int | None = None):
        self.info = info
        self._session = session
        # what a frame is kept within (tiling.automatic_tile), in bytes; None: the default,
        # tiling.MEMORY_BUDGET, for frames that need several windows anyway
        self.memory_budget = memory_budget

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    @property
    def required_passes(self) -> tuple[str, ...]:
        return required_passes(self.info)

    def missing_passes(self, available) -> list[str]:
        return missing_for(self.info, available)

    def missing_message(self, missing: list[str], where: str = "") -> str:
        where = f"{where} " if where else ""
        return f"{where}lacks passes model {self.info.name!r} needs: {missing_passes_hint(missing)}"

    def denoise(self, passes: dict[str, np.ndarray], tile: int = DEFAULT_TILE,
                progress: Callable[[float], None] | None = None,
                cancel: Callable[[], bool] | None = None, *, where: str = "",
                keep_parts: bool = True, held_bytes: int | None = None) -> DenoiseResult:
        """Denoise one view layer given as canonical name -> (H, W, C) float arrays (left unchanged: what
        the networks read is sanitised in copies, see passes.decompose). ``where`` names the render in
        warnings.

        Without ``keep_parts`` a frame that runs in several windows (4K) is decomposed and recombined
        window by window, and the result holds only the beauty and the two denoised parts (``parts``
        None, ``outputs`` empty): the whole-frame decomposition is never held (~1 GiB at 4K), and the
        pixels are the same. One-window frames (1080p) are decomposed whole either way. ``held_bytes``:
        what the caller holds of the image the passes came from (every layer and pass of an EXR), for
        the memory budget; by default the passes given.

        When ``noisy_image`` is present it is the noisy beauty (Blender's own denoiser then put its result
        in Combined), so it is decomposed instead of ``combined``. A model that outputs NaN/Inf is broken:
        DenoiserError (exit code 1) naming it, never a silently blackened pixel.
        """
        started = time.perf_counter()
        missing = self.missing_passes(passes)
        if missing:
            raise DenoiserError(self.missing_message(missing, "render"))
        if self.info.needs_variance and any(v not in passes for v in VARIANCE_INPUTS):
            raise DenoiserError(f"model {self.info.name!r} needs {', '.join(VARIANCE_INPUTS)} inputs, "
                                "which Blender does not render; choose another model")
        # The optional passes must reach decompose() as they did at training time (pack.py decomposes
        # every pass), or volume light would silently drop into the untouched residual.
        wanted = (*self.required_passes, *PASSES_USED_WHEN_PRESENT, *VARIANCE_INPUTS)
        used = {name: _hwc(passes[name]) for name in wanted if name in passes}
        if "noisy_image" in passes:
            used["combined"] = _hwc(passes["noisy_image"])
        _check_sizes(used)
        nonfinite = _count_nonfinite(used)
        if nonfinite:
            listing = ", ".join(f"{display_name(name)} {count}" for name, count in nonfinite.items())
            log.warning("%s: %d NaN/Inf values in passes the denoiser reads, made finite for it (%s); the "
                        "passes themselves are kept as they are", where or "render", sum(nonfinite.values()),
                        listing)
        height, width = used["combined"].shape[:2]
        radius, multiple = self.info.receptive_radius, self.info.size_multiple
        if int(tile) <= AUTO_TILE:
            # what this frame holds besides the windows: the image its passes came from (``held_bytes``,
            # else these passes), the three results, and the whole-frame parts and raw outputs that
            # keep_parts holds (23 + 9 channels)
            pixels = height * width
            frame_bytes = ((sum(np.asarray(a).nbytes for a in passes.values()) if held_bytes is None
                            else held_bytes) + sum(RESULT_CHANNELS.values()) * 4 * pixels
                           + (32 * 4 * pixels if keep_parts else 0))
            tile, within = automatic_tile(height, width, radius, multiple, frame_bytes, self.memory_budget)
            if not within and self.memory_budget is not None:
                log.info("%s: %.1f GiB cannot be kept to (the frame takes %.1f GiB itself, and smaller "
                         "windows would multiply the work): running in the smallest windows that do not",
                         where or "render", self.memory_budget / 2**30, frame_bytes / 2**30)
        rows, cols = axis_spans(height, tile, radius, multiple), axis_spans(width, tile, radius, multiple)
        windows = len(rows) * len(cols)
        window_height, window_width = window_size(rows, cols)
        log.debug("%s: %d window(s) of %dx%d px (tile %d)", where or "render", windows, window_width,
                  window_height, tile)
        fields = {"nonfinite_inputs": sum(nonfinite.values())}
        try:
            if windows > 1 and not keep_parts:
                result = self._denoise_by_window(used, tile, progress, cancel, **fields)
            else:
                parts = decompose(used, self.info.denoise_residual, self.info.demodulate_specular,
                                  separate_volume=self.info.separates_volume, finite=not nonfinite)
                # a frame in several windows hands each window's freed buffers back before the next
                # one, so it peaks at one window's buffers (denoiser_core.memory)
                run = self._run if windows == 1 else self._run_and_release
                outputs = run_tiled(run, self._network_inputs(parts, used),
                                    {name: KNOWN_OUTPUTS[name] for name in self.info.outputs},
                                    tile, radius, multiple, progress, cancel)
                result = DenoiseResult.from_parts(parts, outputs, **fields)
        except MemoryError:
            raise self._out_of_memory(height, width, tile) from None
        result.seconds = time.perf_counter() - started
        return result

    def _network_inputs(self, parts: Decomposition, used: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's inputs, (H, W, C) each, from a decomposition of ``used`` (the passes it read)."""
        inputs = {"diffuse": parts.diffuse, "specular": parts.specular, "albedo": parts.albedo,
                  "normal": parts.normal, "depth": parts.depth, "diffuse_color": parts.diffuse_color,
                  "volume": parts.volume, "specular_color": parts.specular_color}
        for name in VARIANCE_INPUTS:
            if name in used:
                inputs[name] = sanitize_guide(name, used[name][..., :1])
        return {name: inputs[name] for name in self.info.inputs}

    def _denoise_by_window(self, used: dict[str, np.ndarray], tile: int,
                           progress: Callable[[float], None] | None, cancel: Callable[[], bool] | None,
                           **fields) -> DenoiseResult:
        """denoise() of a frame in several windows, decomposing and recombining each window on its own.

        The decomposition and recombination work pixel by pixel, so a window of the (reflection-padded)
        passes decomposes to the same window of the whole-frame decomposition: the result is the same.
        The results are planar ((C, H, W) storage behind (H, W, C) views), as EXR passes are stored, so
        writing them back takes no copy."""
        height, width = used["combined"].shape[:2]
        planes = {name: np.empty((channels, height, width), np.float32)
                  for name, channels in RESULT_CHANNELS.items()}

        def run_window(window: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            parts = decompose(window, self.info.denoise_residual, self.info.demodulate_specular,
                              separate_volume=self.info.separates_volume,
                              finite=not fields["nonfinite_inputs"])
            feeds = {name: np.ascontiguousarray(array.transpose(2, 0, 1)[None])
                     for name, array in self._network_inputs(parts, window).items()}
            window.clear()  # the window's passes (~50 channels) are not needed while the networks run
            parts = _recombination_parts(parts)
            release_freed_memory()  # the decomposition's buffers: onnxruntime's do not fit in them
            outputs = self._run_and_release(feeds)
            del feeds
            shape = parts.residual.shape[:2]
            for name, output in outputs.items():
                check_output_shape(name, output, (1, KNOWN_OUTPUTS[name], *shape))
            result = DenoiseResult.from_parts(parts, {name: output[0].transpose(1, 2, 0)
                                                      for name, output in outputs.items()})
            return {name: getattr(result, name).transpose(2, 0, 1)[None] for name in planes}

        targets = {name: plane.transpose(1, 2, 0) for name, plane in planes.items()}
        run_tiled(run_window, used, {name: plane.shape[0] for name, plane in planes.items()}, tile,
                  self.info.receptive_radius, self.info.size_multiple, progress, cancel,
                  channels_first=False, out=targets)
        return DenoiseResult(beauty=targets["beauty"], diffuse=targets["diffuse"],
                             specular=targets["specular"], **fields)

    def _run_and_release(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return self._run(feeds)
        finally:
            release_freed_memory()

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = list(self.info.outputs)
        failure = None
        with captured_native_output():  # onnxruntime logs its failures to stderr besides raising them
            try:
                results = self._session.run(names, feeds)
            except Exception as error:  # onnxruntime's own exception types
                failure = str(error).strip()
        if failure is not None:
            if _ALLOCATION_FAILED.search(failure):
                raise MemoryError(failure)  # denoise() words the hint
            raise DenoiserError(f"model {self.info.name!r} failed: {failure[:300]}", exit_code=1)
        for name, result in zip(names, results, strict=True):
            bad = _nonfinite_count(result)
            if bad:
                raise DenoiserError(f"model {self.info.name!r} ({self.info.path}) is broken: it output {bad} "
                                    f"NaN/Inf values in {name} from finite inputs", exit_code=1)
        return dict(zip(names, results, strict=True))

    def _out_of_memory(self, height: int, width: int, tile: int) -> DenoiserError:
        """The out-of-memory message, by cause: the tile size (a smaller --tile helps), or the model's
        size_multiple and context, which set the smallest window whatever the tile."""
        radius, multiple = self.info.receptive_radius, self.info.size_multiple

        def window(tile: int) -> tuple[int, int]:  # (width, height)
            rows, cols = axis_spans(height, tile, radius, multiple), axis_spans(width, tile, radius, multiple)
            return window_size(rows, cols)[::-1]

        (w, h), (smallest_w, smallest_h) = window(tile), window(multiple)
        name = f"model {self.info.name!r}"
        if (w, h) == (smallest_w, smallest_h):
            padded_w, padded_h = round_up(width, multiple), round_up(height, multiple)
            cause = (f"its size_multiple {multiple} pads the {width}x{height} image to {padded_w}x{padded_h}"
                     if padded_w * padded_h > 2 * width * height else
                     f"its size_multiple {multiple} and context of {radius} px")
            return DenoiserError(f"out of memory: {name} needs windows of at least {w}x{h} px ({cause}); "
                                 "a smaller --tile cannot help: use a machine with more memory or another "
                                 "model", exit_code=1)
        context = f", plus {radius} px of context on every side" if radius else ""
        return DenoiserError(f"out of memory running {name} on {w}x{h} px windows: try a smaller --tile "
                             f"(this run used {tile}{context})", exit_code=1)


_NOT_KEPT = np.empty((0, 0, 0), np.float32)


def _recombination_parts(parts: Decomposition) -> Decomposition:
    """``parts`` with only what recombine() reads: the noisy light and the guides, which the networks
    have in their own copies, are dropped (~13 channels of a window, 16 with a volume buffer)."""
    return replace(parts, diffuse=_NOT_KEPT, specular=_NOT_KEPT, albedo=_NOT_KEPT, normal=_NOT_KEPT,
                   depth=_NOT_KEPT, volume=None if parts.volume is None else _NOT_KEPT)


def _hwc(array: np.ndarray) -> np.ndarray:
    """(H, W) single-channel arrays (depth as some callers hold it) become (H, W, 1)."""
    array = np.asarray(array)
    return array[..., None] if array.ndim == 2 else array


def _count_nonfinite(passes: dict[str, np.ndarray]) -> dict[str, int]:
    counts = {name: _nonfinite_count(a) for name, a in passes.items()}
    return {name: count for name, count in counts.items() if count}


def _nonfinite_count(array: np.ndarray) -> int:
    """NaN/Inf values in ``array``, counted (with a mask) only where ``all_finite`` finds some."""
    return 0 if all_finite(array) else int(array.size - np.count_nonzero(np.isfinite(array)))


def _check_sizes(passes: dict[str, np.ndarray]) -> None:
    sizes = {name: tuple(array.shape[:2]) for name, array in passes.items()}
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{name} {w}x{h}" for name, (h, w) in sizes.items())
        raise DenoiserError(f"passes have different sizes: {listing}")


def load_model(name_or_path: str | os.PathLike | None = None, device: str = "auto",
               memory_budget: int | None = None) -> Denoiser:
    """Load a model by name or path (None: the default model) for ``device`` (auto, cpu, cuda, ...);
    ``memory_budget`` (bytes) sizes the windows of every frame; by default (None) tiling.MEMORY_BUDGET
    sizes those of frames that need several windows anyway (tiling.automatic_tile).

    The session is built here, once per call (callers keep the Denoiser). An accelerator that cannot run
    falls back to the CPU with one warning saying why (``devices.fallback_reason``).
    """
    from . import devices  # the module, not names: its probe result is cached there

    info = resolve_model(name_or_path)
    providers = providers_for(device)
    if (device or "auto").lower() == "auto" and providers == [CPU] and devices.fallback_reason("auto"):
        log.warning("no accelerator could start (%s); running on the CPU", devices.fallback_reason("auto"))
    try:
        session = open_session(info.path, providers, session_options(providers))
    except DenoiserError as accelerator_error:
        if providers == [CPU]:
            raise
        # onnxruntime retries failed CUDA/TensorRT providers on the CPU itself; other providers (DirectML,
        # CoreML) raise. A bad model file fails here again, with its own message.
        session = open_session(info.path, [CPU], session_options([CPU]))
        log.warning("%s could not start (%s); running on the CPU", providers[0], accelerator_error)
    check_graph(info, session)
    active = session.get_providers()
    if providers[0] != CPU and providers[0] not in active:
        log.warning("%s could not start (see onnxruntime's log); running on %s", providers[0], active[0])
    log.debug("model %s on %s", info.summary(), ", ".join(active))
    return Denoiser(info, session, memory_budget)
