"""Which devices can run here, for the Device menu: probed once, by the worker process, in the background.

The first menu or panel draw starts the probe on a thread (the worker starts onnxruntime and each
accelerator it has, which takes a moment, longer with CUDA libraries to load); until it answers the menu
offers Automatic and CPU. The answer is kept for the Blender session.
"""

from __future__ import annotations

import threading

_result: dict[str, tuple[bool, str]] | None = None   # device -> (usable, why not)
_error = ""
_started = False
_finished = threading.Event()
_redraw = False


def probed() -> dict[str, tuple[bool, str]] | None:
    """The probe's answer, or None while it runs (the first call starts it)."""
    global _started
    if not _started:
        _started = True
        threading.Thread(target=_probe, daemon=True, name="kprcan: device probe").start()
    return _result


def wait(timeout: float) -> dict[str, tuple[bool, str]] | None:
    probed()
    _finished.wait(timeout)
    return _result


def error() -> str:
    return _error


def accelerator_problems() -> dict[str, str]:
    """Accelerators this onnxruntime build has but that cannot start here -> why (for the panel)."""
    return {name: reason for name, (usable, reason) in (_result or {}).items()
            if not usable and not reason.startswith("not in this onnxruntime build")}


def take_redraw() -> bool:
    """True once after the probe finished (the poll timer then redraws the menus)."""
    global _redraw
    redraw, _redraw = _redraw, False
    return redraw


def _probe() -> None:
    global _result, _error, _redraw
    from .runner import worker  # runner imports preferences, which imports this module
    from .worker import WorkerError

    try:
        reply = worker().request("probe")
        _result = {name: (bool(usable), reason) for name, (usable, reason) in reply["devices"].items()}
    except WorkerError as problem:
        _error, _result = str(problem), {"cpu": (True, "")}
    _redraw = True
    _finished.set()


def reset() -> None:
    """Forget the answer (unregister): a re-enabled extension probes again."""
    global _result, _error, _started, _redraw
    _result, _error, _started, _redraw = None, "", False, False
    _finished.clear()
