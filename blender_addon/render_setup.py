"""Which passes a model needs, what a scene lacks, and turning them on ("Configure passes")."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import compat
from .core import core


def model_info(model: str | None):
    """ModelInfo of a model name / path without creating an inference session."""
    return core().models.resolve_model(model)


def needed_passes(info) -> tuple[str, ...]:
    """Canonical passes a render must have for ``info`` (the model's list plus the decomposition's)."""
    return core().inference.required_passes(info)


def rendered_view_layers(scene) -> list:
    return [layer for layer in scene.view_layers if layer.use]


def missing_passes(scene, info) -> dict[str, list[str]]:
    """View-layer name -> canonical passes that layer will not deliver (only layers that lack some).

    A layer the compositor drops (Blender 5.0, no Render Layers node) lacks all but Combined.
    """
    needed = needed_passes(info)
    dropped = set(compat.view_layers_without_render_layers_node(scene))
    missing = {}
    for layer in rendered_view_layers(scene):
        lacking = [name for name in needed if name != "combined"
                   and (layer.name in dropped or not compat.pass_enabled(layer, name))]
        if lacking:
            missing[layer.name] = lacking
    return missing


def temporal_asked(scene) -> bool:
    """Denoise Animation Frames with its Temporal option on (the extension's scene settings)."""
    settings = scene.kprcan
    return settings.denoise_animation and settings.temporal


NO_VECTOR_WITH_MOTION_BLUR = "Cycles writes no motion vectors with Motion Blur on"


def temporal_problem(scene) -> str | None:
    """Why this scene's animation frames cannot be denoised in temporal mode, as one line (None: they can).

    Temporal mode moves the previous frame's result to where each surface is now with the Vector pass.
    """
    if scene.render.use_motion_blur:
        return ("Motion Blur is on (Render Properties > Motion Blur), and Cycles writes no motion vectors "
                "with it")
    if scene.frame_step != 1:
        return "Frame Step is not 1, and the Vector pass leads to the frame just before each one"
    dropped = set(compat.view_layers_without_render_layers_node(scene))
    lacking = [layer.name for layer in rendered_view_layers(scene)
               if layer.name in dropped or not compat.pass_enabled(layer, "vector")]
    if lacking:
        return f"{', '.join(lacking)} renders no Vector pass (Configure Passes turns it on)"
    return None


def temporal_note(scene) -> str:
    """What the panel and Configure Passes say about temporal mode where it is asked for."""
    problem = temporal_problem(scene)
    if problem is not None:
        return f"Temporal mode is unavailable: {problem}; each frame is denoised on its own"
    return (f"Temporal mode: frames are denoised in order when the render ends; keep Motion Blur off "
            f"({NO_VECTOR_WITH_MOTION_BLUR})")


@dataclass
class SetupReport:
    enabled: dict[str, list[str]] = field(default_factory=dict)   # view layer -> passes turned on
    cycles_denoiser_disabled: bool = False
    engine_changed: bool = False
    output_format_changed: bool = False
    render_layers_nodes: list[str] = field(default_factory=list)  # view layers given a compositor node
    temporal: str = ""                                            # temporal_note, where it was asked for

    def summary(self) -> str:
        parts = []
        count = sum(len(v) for v in self.enabled.values())
        if count:
            parts.append(f"enabled {count} passes on {len(self.enabled)} view layer(s)")
        if self.cycles_denoiser_disabled:
            parts.append("turned Cycles' own denoiser off")
        if self.engine_changed:
            parts.append("switched the render engine to Cycles")
        if self.output_format_changed:
            parts.append("set the output format to OpenEXR MultiLayer (float)")
        if self.render_layers_nodes:
            parts.append("added Render Layers nodes so the compositor keeps the passes")
        text = "; ".join(parts)
        text = text[:1].upper() + text[1:] if parts else "Passes already configured"
        return f"{text}. {self.temporal}" if self.temporal else text


def configure_passes(scene, info, multilayer_output: bool = False, temporal: bool = False) -> SetupReport:
    """Turn on every pass ``info`` needs on each rendered view layer, turn Cycles' denoiser off.

    ``multilayer_output`` also makes the scene write OpenEXR MultiLayer frames (animation denoising reads
    the passes from the written files). ``temporal`` also turns on the Vector pass temporal mode needs;
    Motion Blur is left as the user set it (it is part of the look), and the report says what it means.
    """
    report = SetupReport()
    if scene.render.engine != "CYCLES":
        scene.render.engine = "CYCLES"
        report.engine_changed = True
    # The optional (volume) passes are denoised with the specular buffer when present, and with Emit and
    # Env the diffuse light also gets the colour covariance (denoiser_core.passes): worth enabling.
    wanted = (*needed_passes(info), *core().passes.PASSES_USED_WHEN_PRESENT)
    if temporal:
        wanted += ("vector",)
    for layer in rendered_view_layers(scene):
        turned_on = [name for name in wanted if not compat.pass_enabled(layer, name)]
        for name in turned_on:
            compat.enable_pass(layer, name)
        if turned_on:
            report.enabled[layer.name] = turned_on
    report.render_layers_nodes = compat.ensure_render_layers_nodes(scene)
    if compat.cycles_denoising_enabled(scene):
        compat.disable_cycles_denoising(scene)
        report.cycles_denoiser_disabled = True
    settings = scene.render.image_settings
    if multilayer_output and not (compat.is_multilayer_exr(settings) and settings.color_depth == "32"):
        compat.set_multilayer_exr(settings)
        report.output_format_changed = True
    if temporal:
        report.temporal = temporal_note(scene)
    return report
