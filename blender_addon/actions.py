"""What the operators and render handlers do, shared: denoise the last render, denoise one frame file."""

from __future__ import annotations

from pathlib import Path

import bpy

from . import compat, render_io, runner
from .jobs import JobState
from .preferences import model_choice, preferences, tile_choice


def denoise_last_render(scene, on_done=None, inline: bool | None = None) -> JobState:
    """Save the Render Result, denoise it into the output folder, show it as "KPRCAN Denoised".

    Raises SettingsError / DenoiserError for problems found before any work; problems found by the
    worker end up in the returned (inline) or final (threaded) JobState's ``errors``.
    """
    prefs = preferences()
    model = model_choice(prefs)  # settings problems surface before the render is written out
    output = render_io.last_render_output(scene, prefs)
    saved = render_io.save_render_result(scene)
    # "Composite" is the compositor's output of the noisy render: not worth keeping next to the result
    request = runner.Request(saved, output, model, prefs.device or "auto", tile_choice(prefs), True,
                             drop_layers=("Composite",))
    job = runner.new_job("Denoising render")
    job.add(request)
    job.close()

    def finished(state: JobState) -> None:
        if state.results and not state.cancelled:
            render_io.load_result_image(state.results[-1])
        if on_done is not None:
            on_done(state)

    return runner.run(job, finished, inline)


_animation_job = None


def denoise_written_frame(scene) -> str | None:
    """Queue (UI) or run (background) the frame ``scene`` just wrote; returns a problem to report, if any."""
    global _animation_job
    frame_path = Path(bpy.path.abspath(scene.render.frame_path(frame=scene.frame_current)))
    if not compat.is_multilayer_exr(scene.render.image_settings):
        return ("animation denoising needs Output > File Format = OpenEXR MultiLayer "
                "(press Configure Passes with Denoise Animation Frames on)")
    if not frame_path.is_file():
        return f"{frame_path}: frame file not found"
    request = runner.request_for(frame_path, render_io.frame_output(frame_path, preferences()), False)
    if bpy.app.background:
        job = runner.new_job(f"Denoising frame {scene.frame_current}")
        job.add(request)
        job.close()
        state = runner.run(job, inline=True)
        return state.errors[-1] if state.errors else None
    if _animation_job is None or _animation_job.finished:
        _animation_job = runner.new_job("Denoising frames")
        runner.run(_animation_job)
    _animation_job.add(request)
    return None


def close_animation_job() -> None:
    """The animation render ended: the frame job finishes what it has and stops."""
    global _animation_job
    if _animation_job is not None:
        _animation_job.close()
        _animation_job = None
