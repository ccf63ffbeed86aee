"""What the operators and render handlers do, shared: denoise the last render, denoise animation frames."""

from __future__ import annotations

from pathlib import Path

import bpy

from . import compat, compositor, render_io, runner
from .jobs import JobState
from .preferences import model_choice, preferences, tile_choice


def denoise_last_render(scene, on_done=None, inline: bool | None = None) -> JobState:
    """Save the Render Result, denoise it into the output folder, show it as "KPRCAN Denoised".

    The image datablock is reloaded in place, so a compositor node holding it shows the new result.
    Raises SettingsError / DenoiserError for problems found before any work; problems found by the
    worker end up in the returned (inline) or final (threaded) JobState's ``errors``.
    """
    prefs = preferences()
    model = model_choice(prefs)  # settings problems surface before the render is written out
    output = render_io.last_render_output(scene, prefs)
    saved = render_io.save_render_result(scene)
    request = runner.Request(saved, output, model, prefs.device or "auto", tile_choice(prefs), True)
    job = runner.new_job("Denoising render")
    job.add(request)
    job.close()
    scene_name = scene.name

    def finished(state: JobState) -> None:
        if state.results and not state.cancelled:
            render_io.load_result_image(state.results[-1])
            scene_now = bpy.data.scenes.get(scene_name)
            if scene_now is not None and compositor.node_in_use(scene_now):
                compositor.refresh(scene_now)
        if on_done is not None:
            on_done(state)

    return runner.run(job, finished, inline)


# --- animation frames ------------------------------------------------------------------------------

class FrameByFrame:
    """Each frame denoised on its own as soon as Blender has written it.

    The animation handlers only talk to this interface (``add`` each written frame, ``finish`` when the
    render ends), so a mode that needs the whole sequence (collect in ``add``, denoise in ``finish``)
    can stand in for it.
    """

    def __init__(self):
        self._job = None

    def add(self, request: runner.Request, frame: int) -> str | None:
        if bpy.app.background:  # no timers to poll a thread: denoise now, report the problem if any
            job = runner.new_job(f"Denoising frame {frame}")
            job.add(request)
            job.close()
            state = runner.run(job, inline=True)
            return state.errors[-1] if state.errors else None
        if self._job is None or self._job.finished:
            self._job = runner.new_job("Denoising frames")
            runner.run(self._job)
        self._job.add(request)
        return None

    def finish(self) -> None:
        if self._job is not None:
            self._job.close()
            self._job = None


_animation: FrameByFrame | None = None


def denoise_written_frame(scene) -> str | None:
    """Hand the frame ``scene`` just wrote to the animation mode; returns a problem to report, if any."""
    global _animation
    frame_path = Path(bpy.path.abspath(scene.render.frame_path(frame=scene.frame_current)))
    if not compat.is_multilayer_exr(scene.render.image_settings):
        return ("animation denoising needs Output > File Format = OpenEXR MultiLayer "
                "(press Configure Passes with Denoise Animation Frames on)")
    if not frame_path.is_file():
        return f"{frame_path}: frame file not found"
    request = runner.request_for(frame_path, render_io.frame_output(frame_path, preferences()), False)
    if _animation is None:
        _animation = FrameByFrame()
    return _animation.add(request, scene.frame_current)


def close_animation_job() -> None:
    """The animation render ended: the frames still queued are denoised, then the job stops."""
    global _animation
    if _animation is not None:
        _animation.finish()
        _animation = None
