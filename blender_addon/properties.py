"""Per-scene settings (saved in the .blend): ``scene.kprcan``."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, PointerProperty


class KPRCAN_SceneSettings(bpy.types.PropertyGroup):
    enabled: BoolProperty(
        name="KPRCAN Denoise", default=False,
        description="Use the KPRCAN neural denoiser for this scene's renders")
    denoise_after_render: BoolProperty(
        name="Denoise After Render", default=False,
        description="Denoise every still render (F12) when it finishes")
    denoise_animation: BoolProperty(
        name="Denoise Animation Frames", default=False,
        description="Denoise each frame an animation render writes (needs OpenEXR MultiLayer output); "
                    "the result is written next to it as <name>_denoised.exr")
    temporal: BoolProperty(
        name="Temporal", default=True,
        description="Denoise the animation's frames in frame order when the render ends, each blended "
                    "with the previous one so flat areas do not flicker. Needs the Vector pass (Configure "
                    "Passes turns it on) and Motion Blur off (Cycles writes no motion vectors with it); "
                    "otherwise each frame is denoised on its own")


def register_properties() -> None:
    bpy.types.Scene.kprcan = PointerProperty(type=KPRCAN_SceneSettings)


def unregister_properties() -> None:
    del bpy.types.Scene.kprcan


CLASSES = (KPRCAN_SceneSettings,)
