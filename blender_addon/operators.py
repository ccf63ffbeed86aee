"""Operators: configure passes, denoise the last render, put the result in the compositor, cancel."""

from __future__ import annotations

import bpy

from . import actions, compat, compositor, render_io, render_setup, runner
from .core import core
from .preferences import SettingsError, model_choice, preferences


def _user_errors() -> tuple[type[BaseException], ...]:
    try:
        return (SettingsError, core().DenoiserError, OSError)
    except ImportError:
        return (SettingsError, OSError)


class KPRCAN_OT_configure_passes(bpy.types.Operator):
    bl_idname = "kprcan.configure_passes"
    bl_label = "Configure Passes"
    bl_description = ("Turn on the render passes the chosen model needs, turn Cycles' own denoiser off "
                      "for final renders (and for animation denoising set OpenEXR MultiLayer output, and "
                      "with Temporal on turn on the Vector pass)")
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        scene = context.scene
        try:
            info = render_setup.model_info(model_choice(preferences(context)))
            report = render_setup.configure_passes(scene, info, scene.kprcan.denoise_animation,
                                                   render_setup.temporal_asked(scene))
        except (ImportError, *_user_errors()) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"KPRCAN ({info.name}): {report.summary()}")
        return {"FINISHED"}


class KPRCAN_OT_denoise_last_render(bpy.types.Operator):
    bl_idname = "kprcan.denoise_last_render"
    bl_label = "Denoise Last Render"
    bl_description = "Denoise the image in Render Result; the result opens as the image \"KPRCAN Denoised\""

    @classmethod
    def poll(cls, _context):
        return not runner.busy()

    def execute(self, context):
        try:
            state = actions.denoise_last_render(context.scene)
        except (ImportError, *_user_errors()) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        if not bpy.app.background:  # threaded: the watch operator and the panel report the outcome
            return {"FINISHED"}
        if state.errors:
            self.report({"ERROR"}, state.errors[-1])
            return {"CANCELLED"}
        self.report({"INFO"}, f"Denoised render written to {state.results[-1]}")
        return {"FINISHED"}


def _inserted_message(node, replaced: list[str]) -> str:
    text = f"Added node {node.name!r} to the compositor"
    if replaced:
        text += f", replacing the link from {', '.join(replaced)} (Restore Links brings it back)"
    return text


class KPRCAN_OT_insert_compositor_nodes(bpy.types.Operator):
    bl_idname = "kprcan.insert_compositor_nodes"
    bl_label = "Denoise"
    bl_description = ("Denoise the last render and add an Image node with the result (beauty, diffuse and "
                      "specular passes) to the compositor, wired to its output; later still renders "
                      "replace its image with their own denoised version")
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, _context):
        return not runner.busy()

    def execute(self, context):
        scene, layer = context.scene, context.view_layer.name

        def insert_when_done(state):  # main thread, when the denoise finishes
            if state.results and not state.cancelled:
                node, replaced = compositor.insert_denoised_node(
                    scene, bpy.data.images[render_io.RESULT_IMAGE], layer)
                runner.last_message = f"{runner.last_message}; {_inserted_message(node, replaced)}"
                _undo_step("Insert KPRCAN Denoised node")

        try:
            state = actions.denoise_last_render(scene, on_done=insert_when_done)
        except render_io.NoRenderError as error:
            existing = bpy.data.images.get(render_io.RESULT_IMAGE)
            if existing is None:
                self.report({"ERROR"}, str(error))
                return {"CANCELLED"}
            return self._insert(scene, existing, layer)  # nothing rendered now: use the earlier result
        except (ImportError, ValueError, *_user_errors()) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        if state.errors:
            self.report({"ERROR"}, state.errors[-1])
            return {"CANCELLED"}
        if bpy.app.background:  # else the node appears when the threaded denoise finishes
            self.report({"INFO"}, runner.last_message)
        return {"FINISHED"}

    def _insert(self, scene, image, layer):
        try:
            node, replaced = compositor.insert_denoised_node(scene, image, layer)
        except ValueError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, _inserted_message(node, replaced))
        return {"FINISHED"}


def _undo_step(name: str) -> None:
    """An undo step for a change made after the operator returned (the threaded insert): Ctrl+Z then
    goes back to the compositor as it was. Background Blender keeps no undo history."""
    if bpy.app.background:
        return
    window = next(iter(bpy.context.window_manager.windows), None)
    try:
        with bpy.context.temp_override(window=window):
            bpy.ops.ed.undo_push(message=name)
    except (RuntimeError, TypeError) as error:
        print(f"KPRCAN: no undo step for {name!r}: {error}")


class KPRCAN_OT_restore_compositor_links(bpy.types.Operator):
    bl_idname = "kprcan.restore_compositor_links"
    bl_label = "Restore Links"
    bl_description = ("Remove the KPRCAN Denoised node and wire the compositor output as it was before "
                      "Denoise")
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        tree = compat.compositor_tree(context.scene, create=False)
        return tree is not None and compositor.NODE_NAME in tree.nodes

    def execute(self, context):
        restored = compositor.restore_links(context.scene)
        text = f"restored the link from {', '.join(restored)}" if restored else "no earlier link to restore"
        self.report({"INFO"}, f"Removed {compositor.NODE_NAME!r}; {text}")
        return {"FINISHED"}


class KPRCAN_OT_cancel(bpy.types.Operator):
    bl_idname = "kprcan.cancel"
    bl_label = "Cancel Denoising"
    bl_description = "Stop the running denoise (files already written stay)"

    def execute(self, _context):
        runner.cancel_all()
        return {"FINISHED"}


class KPRCAN_OT_watch_jobs(bpy.types.Operator):
    """Progress in the status bar while denoising runs; Esc cancels."""

    bl_idname = "kprcan.watch_jobs"
    bl_label = "KPRCAN Progress"
    bl_options = {"INTERNAL"}

    def invoke(self, context, _event):
        runner.watching = True
        self._timer = context.window_manager.event_timer_add(0.2, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type == "ESC" and event.value == "PRESS":
            runner.cancel_all()
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        if runner.busy():
            text = " | ".join(state.text() for state in runner.active_states())
            context.workspace.status_text_set(f"KPRCAN {text}  (Esc to cancel)")
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        context.workspace.status_text_set(None)
        runner.watcher_ended()
        if runner.last_message:
            self.report({"ERROR" if runner.last_error else "INFO"}, runner.last_message)
        return {"FINISHED"}


CLASSES = (
    KPRCAN_OT_configure_passes,
    KPRCAN_OT_denoise_last_render,
    KPRCAN_OT_insert_compositor_nodes,
    KPRCAN_OT_restore_compositor_links,
    KPRCAN_OT_cancel,
    KPRCAN_OT_watch_jobs,
)
