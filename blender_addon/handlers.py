"""Render handlers: denoise after a still render, denoise animation frames as they are written (or, in
temporal mode, in frame order when the render ends).

A still render is denoised when Denoise After Render is on, and also whenever the compositor's KPRCAN
Denoised node drives the output: that node then shows this render's denoised image, not an older one.

Render handlers may run on Blender's render thread, so they only do quick, thread-safe things there:
frames go into the worker's queue; a finished still render is handed to the main thread (the runner's
timer), which saves the Render Result and starts the job. Background Blender renders on the main
thread and has no timers, so there everything runs synchronously in the handler.

All handlers are @persistent (they survive loading another .blend); ``load_post`` re-adds any missing
ones, and unregister removes exactly these functions.
"""

from __future__ import annotations

import bpy
from bpy.app.handlers import persistent

from . import actions, compositor, runner

_frames_written = 0


def _settings(scene):
    settings = getattr(scene, "kprcan", None)
    return settings if settings is not None and settings.enabled else None


@persistent
def on_render_init(_scene, *_args):
    global _frames_written
    _frames_written = 0


STILL_NODE_WARNING = ("the compositor's KPRCAN Denoised node holds one still image: every animation frame "
                      "composites it (Restore Links in the compositor's KPRCAN tab before rendering "
                      "animations; Denoise Animation Frames writes each frame's own denoised file)")


@persistent
def on_render_write(scene, *_args):
    global _frames_written
    _frames_written += 1
    if _frames_written == 1 and compositor.node_in_use(scene) is not None:
        runner.report(STILL_NODE_WARNING, error=False)
    settings = _settings(scene)
    if settings is None or not settings.denoise_animation:
        return
    try:
        problem = actions.denoise_written_frame(scene)
    except Exception as error:  # settings / model problems: report, never break the render
        problem = str(error)
    if problem:
        runner.report(f"frame {scene.frame_current}: {problem}")


def _close_animation() -> None:
    try:
        problem = actions.close_animation_job()
    except Exception as error:  # settings / model problems: report, never break the render
        problem = str(error)
    if problem:
        runner.report(f"animation frames: {problem}")


@persistent
def on_render_complete(scene, *_args):
    _close_animation()
    if _frames_written:
        return  # an animation / written still: frames are handled per file
    settings = _settings(scene)
    wanted = settings is not None and settings.denoise_after_render
    if not wanted and compositor.node_in_use(scene) is None:
        return  # nothing asked for; with our node in the compositor each still gets its own denoise
    if bpy.app.background:
        _denoise_still(scene.name)
    else:
        runner.call_soon(lambda: _denoise_still(scene.name))


@persistent
def on_render_cancel(_scene, *_args):
    _close_animation()


def _denoise_still(scene_name: str) -> None:
    scene = bpy.data.scenes.get(scene_name)
    if scene is None:
        return
    try:
        state = actions.denoise_last_render(scene)
    except Exception as error:
        runner.report(f"denoise after render: {error}")
        return
    if state.errors:
        runner.report(f"denoise after render: {state.errors[-1]}")


@persistent
def on_load_post(*_args):
    ensure()
    runner.watcher_ended()  # loading a file ended the watch operator, if it was running


HANDLERS = (
    ("render_init", on_render_init),
    ("render_write", on_render_write),
    ("render_complete", on_render_complete),
    ("render_cancel", on_render_cancel),
    ("load_post", on_load_post),
)


def ensure() -> None:
    """Add each handler once (idempotent)."""
    for name, function in HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        if function not in handlers:
            handlers.append(function)


def register() -> None:
    ensure()


def unregister() -> None:
    for name, function in HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        while function in handlers:
            handlers.remove(function)
