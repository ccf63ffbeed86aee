"""Running a model on canonical passes: decompose, tiled ONNX inference, recombine."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .devices import CPU, providers_for, session_options
from .errors import DenoiserError
from .models import KNOWN_OUTPUTS, ModelInfo, check_graph, open_session, resolve_model
from .passes import (
    DECOMPOSITION_PASSES,
    FEATURE_PASSES,
    PASSES_USED_WHEN_PRESENT,
    decompose,
    missing_passes,
    missing_passes_hint,
    recombine,
    sanitize,
)
from .tiling import AUTO_TILE, run_tiled

log = logging.getLogger("kprcan")

VARIANCE_INPUTS = ("diffuse_variance", "specular_variance")
# Tiles chosen per image (tiling.choose_tile): a 1080p frame runs as one window, larger frames in the
# fewest pixels that keep each window within tiling.MAX_WINDOW_PIXELS. A number is the largest tile edge.
DEFAULT_TILE = AUTO_TILE


@dataclass
class DenoiseResult:
    beauty: np.ndarray      # (H, W, 4) denoised RGBA (alpha of the noisy beauty)
    diffuse: np.ndarray     # (H, W, 3) DiffCol * denoised diffuse light
    specular: np.ndarray    # (H, W, 3) denoised specular radiance
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # raw network outputs, (H, W, 3)
    nonfinite_inputs: int = 0   # NaN/Inf input values replaced by 0
    seconds: float = 0.0


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

    def __init__(self, info: ModelInfo, session):
        self.info = info
        self._session = session

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
                cancel: Callable[[], bool] | None = None) -> DenoiseResult:
        """Denoise one view layer given as canonical name -> (H, W, C) float arrays.

        When ``noisy_image`` is present it is the noisy beauty (Blender's own denoiser then put its result
        in Combined), so it is decomposed instead of ``combined``.
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
        nonfinite = sum(int(a.size - np.count_nonzero(np.isfinite(a))) for a in used.values())
        if nonfinite:
            log.warning("%d NaN/Inf input values replaced by 0", nonfinite)
        parts = decompose(used, self.info.denoise_residual)
        inputs = {"diffuse": parts.diffuse, "specular": parts.specular, "albedo": parts.albedo,
                  "normal": parts.normal, "depth": parts.depth}
        for name in VARIANCE_INPUTS:
            if name in used:
                inputs[name] = sanitize(used[name])[..., :1]
        feeds = {name: inputs[name] for name in self.info.inputs}
        tile = int(tile)
        outputs = run_tiled(self._run, feeds, KNOWN_OUTPUTS, tile, self.info.receptive_radius,
                            self.info.size_multiple, progress, cancel)
        diffuse, specular = outputs["diffuse_denoised"], outputs["specular_denoised"]
        return DenoiseResult(
            beauty=recombine(parts, diffuse, specular),
            diffuse=sanitize(parts.diffuse_color * diffuse),
            specular=specular,
            outputs=outputs,
            nonfinite_inputs=nonfinite,
            seconds=time.perf_counter() - started,
        )

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = list(KNOWN_OUTPUTS)
        try:
            results = self._session.run(names, feeds)
        except Exception as error:  # onnxruntime's own exception types
            raise DenoiserError(f"model {self.info.name!r} failed: {str(error).strip()[:300]}",
                                exit_code=1) from None
        return dict(zip(names, results, strict=True))


def _hwc(array: np.ndarray) -> np.ndarray:
    """(H, W) single-channel arrays (depth as some callers hold it) become (H, W, 1)."""
    array = np.asarray(array)
    return array[..., None] if array.ndim == 2 else array


def _check_sizes(passes: dict[str, np.ndarray]) -> None:
    sizes = {name: tuple(array.shape[:2]) for name, array in passes.items()}
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{name} {w}x{h}" for name, (h, w) in sizes.items())
        raise DenoiserError(f"passes have different sizes: {listing}")


def load_model(name_or_path: str | os.PathLike | None = None, device: str = "auto") -> Denoiser:
    """Load a model by name or path (None: the default model) for ``device`` (auto, cpu, cuda, ...).

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
    return Denoiser(info, session)
