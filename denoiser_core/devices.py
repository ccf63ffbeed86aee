"""``--device`` names -> onnxruntime execution providers, and session options."""

from __future__ import annotations

import logging
import os

import onnxruntime as ort

from .errors import DenoiserError

log = logging.getLogger("kprcan")

CPU = "CPUExecutionProvider"
# Device name -> providers to request, best first; CPU is always appended as the fallback.
DEVICE_PROVIDERS = {
    "cpu": [CPU],
    "cuda": ["CUDAExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
    "directml": ["DmlExecutionProvider"],
    "coreml": ["CoreMLExecutionProvider"],
}
# "auto" skips TensorRT: it compiles an engine per input shape, which costs minutes on a first run.
AUTO_ORDER = ("cuda", "directml", "coreml")
DEVICE_NAMES = ("auto", *DEVICE_PROVIDERS)


def available_devices() -> list[str]:
    """Device names usable with this onnxruntime build ("cpu" always)."""
    providers = set(ort.get_available_providers())
    return [name for name, wanted in DEVICE_PROVIDERS.items() if wanted[0] in providers]


def providers_for(device: str) -> list[str]:
    """Providers to request for ``device``; an unavailable device falls back to CPU with a warning."""
    device = (device or "auto").lower()
    if device not in DEVICE_NAMES:
        raise DenoiserError(f"unknown device {device!r} (choose from {', '.join(DEVICE_NAMES)})")
    available = ort.get_available_providers()
    if device == "auto":
        for name in AUTO_ORDER:
            if DEVICE_PROVIDERS[name][0] in available:
                return [p for p in DEVICE_PROVIDERS[name] if p in available] + [CPU]
        return [CPU]
    wanted = [p for p in DEVICE_PROVIDERS[device] if p in available and p != CPU]
    if device != "cpu" and not wanted:
        log.warning("device %r is not available in this onnxruntime (providers: %s); using the CPU",
                    device, ", ".join(available))
    return wanted + [CPU]


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def session_options(providers: list[str]) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = usable_cores()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: the CLI prints its own warnings
    # Idle worker threads would otherwise spin between tiles, stealing CPU from the numpy work
    # (and from Blender's UI when the add-on runs us).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # onnxruntime's CPU arena keeps its high-water mark for the session's life and grows in powers of
    # two: measured on `fast` at tile 1024 it peaked at 4.4 GiB on a 4K frame (3.3 GiB without it) and
    # left 2.1 GiB resident after a 1080p frame (0.4 GiB without) -- memory a Blender session holding
    # the model would never get back. Plain malloc costs 6-11% time (MODEL_CARD speed section).
    options.enable_cpu_mem_arena = False
    if "DmlExecutionProvider" in providers:  # DirectML requires these
        options.enable_mem_pattern = False
    return options
