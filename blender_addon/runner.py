"""Running denoise jobs from Blender: requests, the worker process, the main-thread poll timer.

UI sessions run each job on a thread (jobs.Job) that hands each image to the worker process (worker.py,
which keeps the model loaded) and poll it from a persistent ``bpy.app.timers`` callback that redraws
the panels and, on the main thread, runs the job's ``on_finish`` (loading images and reporting).
Background Blender (``-b``) runs jobs synchronously: it has no UI to keep responsive and its timers never
fire.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bpy

from . import device_probe
from .jobs import Job, JobState
from .preferences import SettingsError, model_choice, preferences, tile_choice
from .worker import COMPOSITOR_LAYER, Worker, WorkerError, device_text

POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Request:
    input: Path            # multilayer EXR with the passes
    output: Path           # denoised multilayer EXR (replaced if it exists: it is ours)
    model: str | None
    device: str
    tile: int
    delete_input: bool     # the input is a temp file the add-on wrote
    # the compositor's output layer is the noisy render composited: never worth denoising or keeping
    drop_layers: tuple[str, ...] = (COMPOSITOR_LAYER,)


@dataclass(frozen=True)
class ShotRequest:
    """Temporal mode: frames denoised in order as one shot (the worker's ``shot`` request)."""

    frames: tuple[tuple[int, Path, Path], ...]   # (frame number, input, output), in frame order
    model: str | None
    device: str
    tile: int
    overwrite: bool = False    # False: frames whose output exists are kept and carry their history on
    drop_layers: tuple[str, ...] = (COMPOSITOR_LAYER,)


def request_for(input_path: Path, output_path: Path, delete_input: bool, context=None) -> Request:
    prefs = preferences(context)
    return Request(Path(input_path), Path(output_path), model_choice(prefs), prefs.device or "auto",
                   tile_choice(prefs), delete_input)


# --- the work (job thread: no bpy; the worker process does the denoising) ---------------------------

_worker = Worker()
last_device: dict = {}      # what the latest denoise ran on: {"device": "cpu", "fallback": reason, ...}


def worker() -> Worker:
    return _worker


def denoise_request(request: Request, progress: Callable[[float], None],
                    cancelled: Callable[[], bool]) -> Path:
    global last_device
    ran = _worker.request("denoise", progress, cancelled, input=str(request.input),
                          output=str(request.output), model=request.model, device=request.device,
                          tile=request.tile, drop_layers=list(request.drop_layers),
                          delete_input=request.delete_input)
    last_device = ran
    return Path(ran["output"])


def denoise_shot_request(request: ShotRequest, progress: Callable[[float], None],
                         cancelled: Callable[[], bool]) -> dict:
    """The worker's reply: the last output, frames ``written``, where it ran."""
    global last_device
    frames = [[number, str(source), str(target)] for number, source, target in request.frames]
    ran = _worker.request("shot", progress, cancelled, frames=frames, model=request.model,
                          device=request.device, tile=request.tile, overwrite=request.overwrite,
                          drop_layers=list(request.drop_layers))
    last_device = ran
    return ran


def expected_errors() -> tuple[type[BaseException], ...]:
    return (WorkerError, SettingsError, OSError)


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


def new_job(label: str, work=denoise_request) -> Job:
    return Job(label, work, expected_errors())


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


def report(message: str, error: bool = True) -> None:
    """Show ``message`` in the panel (until the next job's outcome) and in Blender's console."""
    global last_message, last_error
    last_message, last_error = message, error
    print(f"KPRCAN: {message}")


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
        last_message = f"{state.label}: done ({state.done} image(s)) {device_text(last_device)}"
        last_error = False
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
    if _active or _redraw_once_more or device_probe.take_redraw():
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
    _worker.stop()
    device_probe.reset()
