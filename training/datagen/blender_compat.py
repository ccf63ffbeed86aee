"""Version differences of the Blender Python API that matter for writing denoiser passes (4.5 and 5.0).

Imports only ``bpy`` (and only inside functions), so the Blender add-on can reuse it verbatim. Every
function takes the objects it changes; nothing here depends on the rest of the project.
"""

from __future__ import annotations

# View-layer settings that make Cycles write every pass the denoiser decomposition uses
# (mirrors the setting column of denoiser_core.passes.PASS_TABLE; kept literal so this file stays bpy-only).
VIEW_LAYER_PASSES = (
    "use_pass_combined", "use_pass_z", "use_pass_normal", "use_pass_emit", "use_pass_environment",
    "use_pass_diffuse_direct", "use_pass_diffuse_indirect", "use_pass_diffuse_color",
    "use_pass_glossy_direct", "use_pass_glossy_indirect", "use_pass_glossy_color",
    "use_pass_transmission_direct", "use_pass_transmission_indirect", "use_pass_transmission_color",
)
CYCLES_VIEW_LAYER_PASSES = ("use_pass_volume_direct", "use_pass_volume_indirect", "denoising_store_passes")


def blender_major() -> int:
    import bpy

    return bpy.app.version[0]


def enable_denoiser_passes(view_layer) -> None:
    """Turn on every pass the denoiser reads on ``view_layer`` (a bpy.types.ViewLayer)."""
    for name in VIEW_LAYER_PASSES:
        setattr(view_layer, name, True)
    for name in CYCLES_VIEW_LAYER_PASSES:
        setattr(view_layer.cycles, name, True)


def set_multilayer_exr(image_settings, half: bool = False, codec: str = "ZIP",
                       single_part: bool = True) -> None:
    """Configure ``image_settings`` (render or File Output node) for a float multilayer OpenEXR.

    Blender 5.0 split the format choice in two: ``media_type`` ('IMAGE' / 'MULTI_LAYER_IMAGE' / 'VIDEO')
    and ``file_format``; 'OPEN_EXR_MULTILAYER' is only accepted once media_type is 'MULTI_LAYER_IMAGE'.

    Blender 5.0 also writes multilayer EXRs as *multi-part* files by default (one part per pass;
    ``use_exr_interleave`` False): readers that look at part 0 only see ``ViewLayer.Combined`` and
    nothing else. ``single_part`` (default) sets ``use_exr_interleave`` so 5.0 writes the same single-part
    interleaved layout as 4.x; readers should still accept both layouts.
    """
    if hasattr(image_settings, "media_type"):
        image_settings.media_type = "MULTI_LAYER_IMAGE"
    image_settings.file_format = "OPEN_EXR_MULTILAYER"
    if hasattr(image_settings, "use_exr_interleave"):
        image_settings.use_exr_interleave = single_part
    image_settings.color_depth = "16" if half else "32"
    image_settings.exr_codec = codec


def set_sky_texture(node, sun_elevation: float, sun_rotation: float, altitude: float = 100.0,
                    air: float = 1.0, dust: float = 1.0, ozone: float = 1.0, sun_disc: bool = False) -> None:
    """Physical sky on a ShaderNodeTexSky: 'NISHITA' in 4.x, renamed in 5.0 (single/multiple scattering)."""
    kinds = [item.identifier for item in node.bl_rna.properties["sky_type"].enum_items]
    for kind in ("NISHITA", "SINGLE_SCATTERING", "MULTIPLE_SCATTERING"):
        if kind in kinds:
            node.sky_type = kind
            break
    node.sun_elevation = sun_elevation
    node.sun_rotation = sun_rotation
    node.altitude = altitude
    node.sun_disc = sun_disc  # off by default: a SUN lamp gives direct sunlight with far less noise
    for name, value in (("air_density", air), ("aerosol_density", dust), ("dust_density", dust),
                        ("ozone_density", ozone)):
        if hasattr(node, name):
            setattr(node, name, value)


def render_multilayer_exr(scene, path: str) -> None:
    """Render ``scene`` with its active camera and write all enabled passes to ``path`` (multilayer EXR).

    ``bpy.ops.render.render(write_still=True)`` writes the render result through the scene's
    image_settings, which is what carries all passes (the path is used verbatim: no frame number added).
    """
    import bpy

    scene.render.filepath = path
    scene.render.use_file_extension = False
    bpy.ops.render.render(write_still=True, scene=scene.name)
