"""Running denoise jobs from Blender: requests, the loaded-model cache, the main-thread poll timer.

UI sessions run each job on a worker thread (jobs.Job) and poll it from a persistent ``bpy.app.timers``
callback that redraws the panels and, on the main thread, runs the job's ``on_finish`` (loading images
and reporting). Background Blender (``-b``) runs jobs synchronously: it has no UI to keep responsive and
its timers never fire.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bpy

from .core import core
from .jobs import Job, JobState
from .preferences import SettingsError, model_choice, preferences, tile_choice

POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Request:
    input: Path            # multilayer EXR with the passes
    output: Path           # denoised multilayer EXR (replaced if it exists: it is ours)
    model: str | None
    device: str
    tile: int
    delete_input: bool     # the input is a temp file the add-on wrote
    drop_layers: tuple[str, ...] = ()   # layers not to copy to the output


def request_for(input_path: Path, output_path: Path, delete_input: bool, context=None) -> Request:
    prefs = preferences(context)
    return Request(Path(input_path), Path(output_path), model_choice(prefs), prefs.device or "auto",
                   tile_choice(prefs), delete_input)


# --- the work (worker thread: no bpy) ------------------------------------------------------------

_denoisers: dict[tuple, object] = {}
_denoisers_lock = threading.Lock()


def loaded_denoiser(model: str | None, device: str):
    """A Denoiser, loaded once per (model file, device) and kept for later renders and frames."""
    dc = core()
    info = dc.models.resolve_model(model)
    stat = info.path.stat()
    key = (str(info.path), stat.st_mtime_ns, device)
    with _denoisers_lock:
        if key not in _denoisers:
            _denoisers.clear()  # one model in memory at a time
            _denoisers[key] = dc.load_model(str(info.path), device)
        return _denoisers[key]


def denoise_request(request: Request, progress: Callable[[float], None],
                    cancelled: Callable[[], bool]) -> Path:
    dc = core()
    try:
        denoiser = loaded_denoiser(request.model, request.device)
        if not request.drop_layers:
            dc.denoise_file(request.input, request.output, model=denoiser, tile=request.tile,
                            overwrite=True, progress=progress, cancel=cancelled)
            return request.output
        image = dc.read_exr(request.input)
        image.passes = [p for p in image.passes if p.layer not in request.drop_layers]
        dc.denoise_image(image, denoiser, request.tile, progress, cancelled)
        dc.write_exr(image, request.output)
    finally:
        if request.delete_input:
            request.input.unlink(missing_ok=True)
    return request.output


def expected_errors() -> tuple[type[BaseException], ...]:
    return (core().DenoiserError, SettingsError, OSError)


# --- jobs as Blender sees them (main thread) -----------------------------------------------------

@dataclass
class ActiveJob:
    job: Job
    on_finish: Callable[[JobState], None] | None


_active: list[ActiveJob] = []
last_message: str = ""      # shown in the panel: the outcome of the latest finished job
last_error: bool = False
watching = False            # the watch operator (status bar, Esc) is running
_watch_failed = False
_redraw_once_more = False


def new_job(label: str) -> Job:
    return Job(label, denoise_request, expected_errors())


def run(job: Job, on_finish: Callable[[JobState], None] | None = None,
        inline: bool | None = None) -> JobState:
    """Start ``job`` (thread + poll timer), or with ``inline`` (default: in background mode) run it now."""
    if inline is None:
        inline = bpy.app.background
    if inline:
        job.run_inline()
        state = job.state()
        _finish(ActiveJob(job, on_finish), state)
        return state
    _active.append(ActiveJob(job, on_finish))
    job.start()
    return job.state()


def active_states() -> list[JobState]:
    return [entry.job.state() for entry in _active]


def busy() -> bool:
    return bool(_active)


def cancel_all() -> None:
    for entry in _active:
        entry.job.cancel()


def _finish(entry: ActiveJob, state: JobState) -> None:
    global last_message, last_error
    if state.cancelled:
        last_message, last_error = f"{state.label}: cancelled", False
    elif state.errors:
        last_message, last_error = f"{state.label}: {state.errors[-1]}", True
    else:
        last_message, last_error = f"{state.label}: done ({state.done} image(s))", False
    if entry.on_finish is not None:
        entry.on_finish(state)


_soon: queue.SimpleQueue = queue.SimpleQueue()


def call_soon(function: Callable[[], None]) -> None:
    """Run ``function`` on the main thread at the next poll (safe to call from any thread)."""
    _soon.put(function)


def poll() -> float:
    """Timer callback: finish completed jobs on the main thread, keep progress displays fresh."""
    while not _soon.empty():
        try:
            _soon.get_nowait()()
        except Exception as error:  # a failing callback must not kill the timer
            print(f"KPRCAN: {error}")
    for entry in list(_active):
        if entry.job.finished:
            _active.remove(entry)
            try:
                _finish(entry, entry.job.state())
            except Exception as error:  # a broken callback must not kill the timer
                print(f"KPRCAN: finishing {entry.job.label} failed: {error}")
    global _redraw_once_more, watching, _watch_failed
    if _active and not watching and not bpy.app.background:
        _start_watcher()
    if not _active and _watch_failed:
        watching = _watch_failed = False
    if _active or _redraw_once_more:
        _redraw_panels()
    _redraw_once_more = bool(_active)
    return POLL_SECONDS


def _start_watcher() -> None:
    """Status-bar progress and Esc to cancel come from a modal operator; start one in the first window.

    Tried once per busy period: the panel still shows progress (and a Cancel button) without it.
    """
    global watching, _watch_failed
    window = next(iter(bpy.context.window_manager.windows), None)
    watching = True
    try:
        with bpy.context.temp_override(window=window):
            bpy.ops.kprcan.watch_jobs("INVOKE_DEFAULT")
    except (RuntimeError, AttributeError, TypeError) as error:  # no window, operator context refused, ...
        _watch_failed = True
        print(f"KPRCAN: progress stays in the panel only: {error}")


def watcher_ended() -> None:
    """Called by the watch operator when it ends, and after loading a file (which ends modal operators)."""
    global watching
    watching = False


def _redraw_panels() -> None:
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in {"PROPERTIES", "NODE_EDITOR", "IMAGE_EDITOR"}:
                area.tag_redraw()


def register() -> None:
    if not bpy.app.timers.is_registered(poll):
        bpy.app.timers.register(poll, first_interval=POLL_SECONDS, persistent=True)


def unregister() -> None:
    cancel_all()
    for entry in _active:
        entry.job.wait(5.0)
    _active.clear()
    if bpy.app.timers.is_registered(poll):
        bpy.app.timers.unregister(poll)
    with _denoisers_lock:
        _denoisers.clear()
