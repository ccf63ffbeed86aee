"""What the operators and render handlers do, shared: denoise the last render, denoise animation frames."""

from __future__ import annotations

from pathlib import Path

import bpy

from . import compat, compositor, render_io, render_setup, runner
from .jobs import JobState
from .preferences import model_choice, preferences, tile_choice
from .worker import device_text


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
    render ends; each returns a problem to report, if any), so a mode that needs the whole sequence
    (collect in ``add``, denoise in ``finish``: InFrameOrder) stands in for it.
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

    def finish(self) -> str | None:
        if self._job is not None:
            self._job.close()
            self._job = None
        return None


class InFrameOrder:
    """Temporal mode: the frames of one animation render denoised in frame order when the render ends (or
    is stopped), each blended with the previous one's result: one run of denoiser_core.shot in the worker
    process, the code ``kprcan denoise --temporal`` runs.

    A frame Blender writes again makes its earlier denoised file outdated: that file is removed at once, so
    an existing ``_denoised.exr`` always belongs to the frame beside it. When the frame before the first
    one written has its denoised file (a render continued with Output > Overwrite off, or a range started
    later), the shot starts from that frame: denoise_shot keeps it and carries its history on.
    """

    def __init__(self, finished_before: tuple[int, Path, Path] | None):
        self._frames: list[tuple[int, Path, Path]] = [finished_before] if finished_before else []
        self._request: runner.Request | None = None  # the model, device and tile of the frames
        self._written = 0

    def add(self, request: runner.Request, frame: int) -> str | None:
        request.output.unlink(missing_ok=True)
        self._frames.append((frame, request.input, request.output))
        self._request, self._written = request, self._written + 1
        return None

    def finish(self) -> str | None:
        if self._request is None:
            return None
        request = self._request
        label = f"Denoising {self._written} frame(s) in temporal mode"
        job = runner.new_job(label, runner.denoise_shot_request)
        job.add(runner.ShotRequest(tuple(self._frames), request.model, request.device, request.tile))
        job.close()

        def finished(state: JobState) -> None:
            if state.results and not state.errors and not state.cancelled:
                runner.last_message = f"{label}: done {device_text(state.results[-1])}"

        state = runner.run(job, finished)  # a thread, or now in background mode
        return state.errors[-1] if state.errors else None


_animation: FrameByFrame | InFrameOrder | None = None


def _finished_frame_before(scene, frame: int, prefs) -> tuple[int, Path, Path] | None:
    """(frame - 1, its render, its denoised file) when both exist: the history a shot continues."""
    source = Path(bpy.path.abspath(scene.render.frame_path(frame=frame - 1)))
    target = render_io.frame_output(source, prefs)
    return (frame - 1, source, target) if source.is_file() and target.is_file() else None


def _animation_mode(scene) -> FrameByFrame | InFrameOrder:
    """The mode for this render, chosen at its first written frame."""
    if not render_setup.temporal_asked(scene):
        return FrameByFrame()
    if render_setup.temporal_problem(scene) is not None:
        runner.report(render_setup.temporal_note(scene), error=False)
        return FrameByFrame()
    return InFrameOrder(_finished_frame_before(scene, scene.frame_current, preferences()))


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
        _animation = _animation_mode(scene)
    return _animation.add(request, scene.frame_current)


def close_animation_job() -> str | None:
    """The animation render ended: the frames still queued (per frame) or collected (temporal) are
    denoised, then the job stops. Returns a problem to report (background mode), if any."""
    global _animation
    animation, _animation = _animation, None
    return animation.finish() if animation is not None else None
