"""Render Properties > KPRCAN Denoise, and the compositor sidebar's Denoise button."""

from __future__ import annotations

import textwrap

import bpy

from . import compat, render_setup, runner
from .core import core_or_none, import_error
from .preferences import SettingsError, model_choice, preferences

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


def _draw_model_status(layout, context) -> None:
    """Which model is used and which passes the scene still lacks for it."""
    if core_or_none() is None:
        _label(layout, import_error() or "denoiser_core is not available", "ERROR")
        return
    try:
        info = render_setup.model_info(model_choice(preferences(context)))
        missing = render_setup.missing_passes(context.scene, info)
    except (SettingsError, OSError, core_or_none().DenoiserError) as error:
        _label(layout, str(error), "ERROR")
        return
    layout.label(text=f"Model: {info.name} ({info.architecture})", icon="NODE_MATERIAL")
    passes = core_or_none().passes
    for layer_name, lacking in missing.items():
        names = ", ".join(passes.display_name(name) for name in lacking[:MAX_LISTED])
        more = f" and {len(lacking) - MAX_LISTED} more" if len(lacking) > MAX_LISTED else ""
        _label(layout, f"{layer_name} lacks: {names}{more}", "ERROR")
    if compat.cycles_denoising_enabled(context.scene):
        layout.label(text="Cycles' own denoiser is on (final render)", icon="INFO")
    settings = context.scene.kprcan
    if settings.denoise_animation and not compat.is_multilayer_exr(context.scene.render.image_settings):
        layout.label(text="Animation frames need OpenEXR MultiLayer output", icon="ERROR")


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
        _draw_progress(layout)


CLASSES = (KPRCAN_PT_render, KPRCAN_PT_compositor)
