"""``--device`` names -> onnxruntime execution providers, and session options."""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

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
    """Device names this onnxruntime build knows ("cpu" always); see ``usable_devices`` for what runs."""
    providers = set(ort.get_available_providers())
    return [name for name, wanted in DEVICE_PROVIDERS.items() if wanted[0] in providers]


@dataclass(frozen=True)
class DeviceStatus:
    name: str
    usable: bool
    reason: str = ""  # why it cannot run here (empty when usable)


_probed: dict[str, DeviceStatus] | None = None
_probe_lock = threading.Lock()


def probe_devices() -> dict[str, DeviceStatus]:
    """Every device name with whether it can run here, found once per process.

    onnxruntime-gpu lists CUDA and TensorRT even where their libraries are missing (it then prints an
    error and runs on the CPU at each model load), so each listed accelerator is started once on a
    one-node model, quietly; a failure keeps the reason (the missing library, as the loader names it).
    """
    global _probed
    with _probe_lock:
        if _probed is None:
            _preload_nvidia_libraries()
            built = set(ort.get_available_providers())
            _probed = {"cpu": DeviceStatus("cpu", True)}
            for name, wanted in DEVICE_PROVIDERS.items():
                if name != "cpu":
                    _probed[name] = _probe(name, wanted[0]) if wanted[0] in built else DeviceStatus(
                        name, False, f"not in this onnxruntime build ({_runtime_name()})")
        return dict(_probed)


def usable_devices() -> list[str]:
    return [name for name, status in probe_devices().items() if status.usable]


def fallback_reason(device: str) -> str:
    """Why ``device`` ("auto": the accelerators this build has) runs on the CPU here; "" when it does not."""
    statuses = probe_devices()
    device = (device or "auto").lower()
    if device == "auto":
        if any(statuses[name].usable for name in AUTO_ORDER):
            return ""
        failed = [statuses[name] for name in AUTO_ORDER
                  if DEVICE_PROVIDERS[name][0] in ort.get_available_providers()]
        return "; ".join(f"{s.name}: {s.reason}" for s in failed)
    status = statuses.get(device)
    return "" if status is None or status.usable else f"{device}: {status.reason}"


def _runtime_name() -> str:
    package = Path(ort.__file__).resolve().parent
    gpu = (package / "capi").glob("*onnxruntime_providers_cuda*")
    return f"onnxruntime{'-gpu' if any(gpu) else ''} {ort.__version__}"


def _preload_nvidia_libraries() -> None:
    """CUDA / cuDNN from NVIDIA's pip packages, when installed next to onnxruntime (docs/blender.md):
    onnxruntime-gpu's own ``preload_dlls``. Its messages (printed) are kept out of stdout."""
    if not hasattr(ort, "preload_dlls") or "CUDAExecutionProvider" not in ort.get_available_providers():
        return
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), contextlib.suppress(Exception):
        ort.preload_dlls()
    log.debug("onnxruntime.preload_dlls: %s", captured.getvalue().strip())


# A one-node ONNX model (Identity on one float), as protobuf bytes: probing needs no file and no `onnx`.
def _field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _probe_model() -> bytes:
    shape = _field(2, _field(1, _varint(1 << 3) + _varint(1)))          # TensorShapeProto: dim_value 1
    tensor_type = _field(1, _varint(1 << 3) + _varint(1) + shape)       # float tensor
    value = {name: _field(1, name.encode()) + _field(2, tensor_type) for name in ("x", "y")}
    node = _field(1, b"x") + _field(2, b"y") + _field(4, b"Identity")
    graph = _field(1, node) + _field(2, b"probe") + _field(11, value["x"]) + _field(12, value["y"])
    opset = _varint(2 << 3) + _varint(13)
    return _varint(1 << 3) + _varint(8) + _field(7, graph) + _field(8, opset)


def _probe(name: str, provider: str) -> DeviceStatus:
    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: a missing library is reported here, not printed
    ort.set_default_logger_severity(4)
    try:  # onnxruntime prints its fallback notice ("EP Error ...") itself: keep it off the console
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            session = ort.InferenceSession(_probe_model(), sess_options=options, providers=[provider, CPU])
        started = provider in session.get_providers()
        reason = "" if started else _library_problem(provider) or f"onnxruntime could not start {provider}"
    except Exception as error:  # onnxruntime's own exception types
        started, reason = False, (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    finally:
        ort.set_default_logger_severity(3)
    return DeviceStatus(name, started, reason)


def _library_problem(provider: str) -> str:
    """The loader's complaint about the provider's shared library (names the missing CUDA library)."""
    stem = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt"}.get(provider)
    if stem is None:
        return ""
    capi = Path(ort.__file__).resolve().parent / "capi"
    library = capi / (f"onnxruntime_providers_{stem}.dll" if sys.platform == "win32"
                      else f"libonnxruntime_providers_{stem}.so")
    if not library.is_file():
        return ""
    try:
        ctypes.CDLL(str(library))
    except OSError as error:
        return str(error).replace(f"{library}: ", "").strip()[:200]
    return ""


def providers_for(device: str) -> list[str]:
    """Providers to request for ``device``; one that cannot run here falls back to CPU with a warning."""
    device = (device or "auto").lower()
    if device not in DEVICE_NAMES:
        raise DenoiserError(f"unknown device {device!r} (choose from {', '.join(DEVICE_NAMES)})")
    if device == "auto":
        usable = usable_devices()
        for name in AUTO_ORDER:
            if name in usable:
                return [*DEVICE_PROVIDERS[name], CPU] if name != "cpu" else [CPU]
        return [CPU]
    if device == "cpu":
        return [CPU]
    reason = fallback_reason(device)
    if reason:
        log.warning("device %r cannot run here (%s); using the CPU", device, reason.split(": ", 1)[1])
        return [CPU]
    available = ort.get_available_providers()
    return [p for p in DEVICE_PROVIDERS[device] if p in available] + [CPU]


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
