"""Getting passes out of Blender and denoised images back in: files, names, the result datablock.

Python cannot read the passes of the Render Result directly, so the last render is saved as a float
multilayer EXR (``Image.save_render`` with the scene's format switched temporarily) and read by the core.
Animation frames are read from the files Blender writes (which must then be OpenEXR MultiLayer).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import bpy

from . import compat
from .preferences import SettingsError

RESULT_IMAGE = "KPRCAN Denoised"


class NoRenderError(SettingsError):
    """Render Result is empty: nothing rendered in this session yet."""


def render_result_image():
    return next((image for image in bpy.data.images if image.type == "RENDER_RESULT"), None)


def save_render_result(scene) -> Path:
    """Write the last render, every pass, to a new temp multilayer EXR (the caller deletes it)."""
    image = render_result_image()
    if image is None:
        raise NoRenderError("no render to denoise: render an image first (F12)")
    path = Path(bpy.app.tempdir or os.path.join(os.path.expanduser("~"), ".cache")) \
        / f"kprcan_render_{uuid.uuid4().hex[:12]}.exr"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with compat.temporary_image_settings(scene, compat.set_multilayer_exr):
            image.save_render(str(path), scene=scene)
    except RuntimeError:  # Blender's "Error: Image 'Render Result' does not have any image data\n"
        path.unlink(missing_ok=True)
        raise NoRenderError("no render to denoise: render an image first (F12)") from None
    return path


def _absolute(path: str) -> Path | None:
    """An absolute path for a Blender path (``//`` relative to the .blend), or None if it has no anchor."""
    if not path:
        return None
    resolved = bpy.path.abspath(path)
    return Path(resolved) if os.path.isabs(resolved) else None


def output_folder(scene, prefs) -> Path:
    """The preferences' Output Folder, else the folder of the scene's render output, else the temp dir."""
    chosen = _absolute(prefs.output_dir)
    if chosen is not None:
        return chosen
    render_output = _absolute(scene.render.filepath)
    if render_output is not None:
        return render_output if scene.render.filepath.endswith(("/", "\\")) else render_output.parent
    return Path(bpy.app.tempdir)


def last_render_output(scene, prefs) -> Path:
    stem = Path(bpy.data.filepath).stem if bpy.data.filepath else "untitled"
    return output_folder(scene, prefs) / f"{stem}_{scene.frame_current:04d}_denoised.exr"


def frame_output(frame_path: Path, prefs) -> Path:
    """Where the denoised version of an animation frame goes: ``<frame stem>_denoised.exr``."""
    folder = _absolute(prefs.output_dir) or frame_path.parent
    return folder / f"{frame_path.stem}_denoised.exr"


def load_result_image(path: Path):
    """Show ``path`` as the image datablock "KPRCAN Denoised" (reloaded if it exists) and return it."""
    image = bpy.data.images.get(RESULT_IMAGE)
    # reloaded in place, so every user of the datablock (the compositor node) sees the new result; a
    # multilayer EXR is type MULTILAYER, not IMAGE
    if image is not None and image.source == "FILE":
        image.filepath = str(path)
        image.reload()
    else:
        image = bpy.data.images.load(str(path), check_existing=False)
        image.name = RESULT_IMAGE
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR":
                area.spaces.active.image = image
                area.tag_redraw()
                break
    return image
