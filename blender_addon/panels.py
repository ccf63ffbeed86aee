"""Render Properties > KPRCAN Denoise, and the compositor sidebar's Denoise button."""

from __future__ import annotations

import textwrap

import bpy

from . import compat, compositor, device_probe, render_setup, runner
from .core import core_or_none, import_error
from .preferences import SettingsError, model_choice, preferences
from .worker import DEVICE_LABELS

MAX_LISTED = 6


def _label(layout, text: str, icon: str = "NONE", width: int = 60) -> None:
    """A message as several labels (Blender clips long ones)."""
    for index, line in enumerate(textwrap.wrap(text, width) or [""]):
        layout.label(text=line, icon=icon if index == 0 else "BLANK1")


def _draw_progress(layout) -> None:
    for state in runner.active_states():
        row = layout.row(align=True)
        if hasattr(row, "progress"):  # UILayout.progress: Blender 4.0+
            row.progress(factor=state.fraction, type="BAR", text=state.text())
        else:
            row.label(text=state.text(), icon="TIME")
        row.operator("kprcan.cancel", text="", icon="CANCEL")
    if not runner.busy() and runner.last_message:
        _label(layout, runner.last_message, "ERROR" if runner.last_error else "INFO")


STILL_NODE_NOTE = ("The compositor's KPRCAN Denoised node holds one still image: each still render "
                   "replaces it with its own denoised version, but every animation frame would composite "
                   "it. Restore Links before rendering animations")


def status_lines(context) -> list[tuple[str, str]]:
    """What the panel's box says, as (text, icon): the model, what the scene still lacks, where the
    network runs, and what the compositor node does. Pure reading: no session, no file written."""
    core = core_or_none()
    if core is None:
        return [(import_error() or "denoiser_core is not available", "ERROR")]
    try:
        info = render_setup.model_info(model_choice(preferences(context)))
        missing = render_setup.missing_passes(context.scene, info)
    except (SettingsError, OSError, core.DenoiserError) as error:
        return [(str(error), "ERROR")]
    lines = [(f"Model: {info.name} ({info.architecture})", "NODE_MATERIAL")]
    for layer_name, lacking in missing.items():
        names = ", ".join(core.passes.display_name(name) for name in lacking[:MAX_LISTED])
        more = f" and {len(lacking) - MAX_LISTED} more" if len(lacking) > MAX_LISTED else ""
        lines.append((f"{layer_name} lacks: {names}{more}", "ERROR"))
    if compat.cycles_denoising_enabled(context.scene):
        lines.append(("Cycles' own denoiser is on (final render)", "INFO"))
    settings = context.scene.kprcan
    if settings.denoise_animation and not compat.is_multilayer_exr(context.scene.render.image_settings):
        lines.append(("Animation frames need OpenEXR MultiLayer output", "ERROR"))
    if render_setup.temporal_asked(context.scene):
        unavailable = render_setup.temporal_problem(context.scene) is not None
        lines.append((render_setup.temporal_note(context.scene), "ERROR" if unavailable else "INFO"))
    lines += device_lines()
    if compositor.node_in_use(context.scene) is not None:
        lines.append((STILL_NODE_NOTE, "NODE_COMPOSITING"))
    return lines


def device_lines() -> list[tuple[str, str]]:
    """Accelerators that cannot run here and why (from the background probe; nothing while it runs)."""
    if device_probe.probed() is None:
        return [("Checking which devices can run here...", "TIME")]
    if device_probe.error():
        return [(f"Device check failed: {device_probe.error()}", "ERROR")]
    return [(f"{DEVICE_LABELS.get(name, name)} cannot run here, so the CPU does: {reason}", "INFO")
            for name, reason in device_probe.accelerator_problems().items()]


def _draw_model_status(layout, context) -> None:
    for text, icon in status_lines(context):
        _label(layout, text, icon)


class KPRCAN_PT_render(bpy.types.Panel):
    bl_label = "KPRCAN Denoise"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "render"
    bl_options = {"DEFAULT_CLOSED"}

    @classmethod
    def poll(cls, context):
        return context.scene.render.engine == "CYCLES" or context.scene.kprcan.enabled

    def draw_header(self, context):
        self.layout.prop(context.scene.kprcan, "enabled", text="")

    def draw(self, context):
        layout = self.layout
        settings = context.scene.kprcan
        layout.active = settings.enabled
        prefs = preferences(context)
        column = layout.column()
        column.prop(prefs, "model")
        if prefs.model == "CUSTOM":
            column.prop(prefs, "model_path", text="")
        column.prop(prefs, "device")
        _draw_model_status(layout.box(), context)
        layout.operator("kprcan.configure_passes", icon="RENDERLAYERS")
        layout.prop(settings, "denoise_after_render")
        layout.prop(settings, "denoise_animation")
        row = layout.row()
        row.active = settings.denoise_animation
        row.separator(factor=2.0)
        row.prop(settings, "temporal")
        layout.operator("kprcan.denoise_last_render", icon="SHADERFX")
        _draw_progress(layout)


class KPRCAN_PT_compositor(bpy.types.Panel):
    bl_label = "KPRCAN Denoise"
    bl_space_type = "NODE_EDITOR"
    bl_region_type = "UI"
    bl_category = "KPRCAN"

    @classmethod
    def poll(cls, context):
        space = context.space_data
        return space is not None and getattr(space, "tree_type", "") == "CompositorNodeTree"

    def draw(self, context):
        layout = self.layout
        layout.operator("kprcan.insert_compositor_nodes", text="Denoise", icon="SHADERFX")
        tree = compat.compositor_tree(context.scene, create=False)
        if tree is not None and compositor.NODE_NAME in tree.nodes:
            layout.operator("kprcan.restore_compositor_links", icon="LOOP_BACK")
        if compositor.node_in_use(context.scene) is not None:
            _label(layout.box(), STILL_NODE_NOTE, "INFO", width=40)
        _draw_progress(layout)


CLASSES = (KPRCAN_PT_render, KPRCAN_PT_compositor)
