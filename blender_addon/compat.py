"""Differences between Blender 4.2 LTS, 4.5 LTS and 5.0 that the add-on touches, in one place.

Features are detected (``hasattr``) rather than inferred from version numbers where the API allows it,
so point releases that back-port a change keep working. Pass names come from denoiser_core.passes.
"""

from __future__ import annotations

import contextlib

import bpy

BLENDER_MAJOR = bpy.app.version[0]
RENDER_RESULT = "Render Result"


# --- render passes ------------------------------------------------------------------------------

def _setting_owner(view_layer, setting: str):
    """(object, attribute) for a PASS_TABLE setting path such as ``cycles.use_pass_volume_direct``."""
    if setting.startswith("cycles."):
        return view_layer.cycles, setting.split(".", 1)[1]
    return view_layer, setting


def pass_enabled(view_layer, canonical: str) -> bool:
    from .core import core

    setting = core().passes.PASS_TABLE[canonical][3]
    owner, attribute = _setting_owner(view_layer, setting)
    return bool(getattr(owner, attribute, False))


def enable_pass(view_layer, canonical: str) -> None:
    from .core import core

    setting = core().passes.PASS_TABLE[canonical][3]
    owner, attribute = _setting_owner(view_layer, setting)
    setattr(owner, attribute, True)


def pass_label(canonical: str) -> str:
    """The pass as this Blender names it (``DiffDir`` in 4.x, ``Diffuse Direct`` in 5.0)."""
    from .core import core

    return core().passes.blender_pass_name(canonical, BLENDER_MAJOR)


# --- image format -------------------------------------------------------------------------------

_FORMAT_FIELDS = ("media_type", "file_format", "color_depth", "exr_codec", "use_exr_interleave",
                  "color_management")


def set_multilayer_exr(image_settings) -> None:
    """Float (32 bit) multilayer OpenEXR with every pass.

    5.0 splits the format in ``media_type`` + ``file_format`` (OPEN_EXR_MULTILAYER needs media_type
    MULTI_LAYER_IMAGE) and writes one part per pass unless ``use_exr_interleave``; the core reads both
    layouts, single-part is what 4.x writes.
    """
    if hasattr(image_settings, "media_type"):
        image_settings.media_type = "MULTI_LAYER_IMAGE"
    image_settings.file_format = "OPEN_EXR_MULTILAYER"
    if hasattr(image_settings, "use_exr_interleave"):
        image_settings.use_exr_interleave = True
    image_settings.color_depth = "32"
    image_settings.exr_codec = "ZIP"


def is_multilayer_exr(image_settings) -> bool:
    return image_settings.file_format == "OPEN_EXR_MULTILAYER"


def set_png(image_settings) -> None:
    if hasattr(image_settings, "media_type"):
        image_settings.media_type = "IMAGE"
    image_settings.file_format = "PNG"
    image_settings.color_mode = "RGBA"
    image_settings.color_depth = "8"


@contextlib.contextmanager
def temporary_image_settings(scene, configure):
    """Apply ``configure(scene.render.image_settings)`` for the duration of the block, then restore."""
    settings = scene.render.image_settings
    saved = [(name, getattr(settings, name)) for name in _FORMAT_FIELDS if hasattr(settings, name)]
    try:
        configure(settings)
        yield settings
    finally:
        for name, value in saved:  # media_type first: it limits which file_format values are valid
            with contextlib.suppress(TypeError, ValueError, AttributeError):
                setattr(settings, name, value)


# --- compositor ---------------------------------------------------------------------------------

def compositor_tree(scene, create: bool = True):
    """The scene's compositing node tree (5.0: ``compositing_node_group``, 4.x: ``node_tree``)."""
    if hasattr(scene, "compositing_node_group"):
        tree = scene.compositing_node_group
        if tree is None and create:
            tree = bpy.data.node_groups.new(f"{scene.name} Compositor", "CompositorNodeTree")
            scene.compositing_node_group = tree
        return tree
    if create and not scene.use_nodes:
        scene.use_nodes = True
    return scene.node_tree


def compositor_output_socket(tree):
    """The input socket whose image becomes the composited result (created when missing)."""
    if hasattr(bpy.types, "CompositorNodeComposite"):  # 4.x
        node = next((n for n in tree.nodes if n.bl_idname == "CompositorNodeComposite"), None)
        if node is None:
            node = tree.nodes.new("CompositorNodeComposite")
        return node.inputs["Image"]
    # 5.0: the tree is a node group; its first Color output is the composite
    if not any(item.item_type == "SOCKET" and item.in_out == "OUTPUT" for item in tree.interface.items_tree):
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
    node = next((n for n in tree.nodes if n.bl_idname == "NodeGroupOutput"), None)
    if node is None:
        node = tree.nodes.new("NodeGroupOutput")
    return node.inputs[0]


def view_layers_without_render_layers_node(scene) -> list[str]:
    """Rendered view layers the compositor has no Render Layers node for.

    Blender 5.0 renders only the passes its compositor can use: with a compositing tree that has no
    Render Layers node for a view layer, that layer's Render Result (and written EXR) holds Combined
    only. 4.x keeps every pass, but a node does no harm there.
    """
    tree = compositor_tree(scene, create=False)
    in_use = hasattr(scene, "compositing_node_group") or scene.use_nodes  # 4.x: use_nodes switches it on
    if tree is None or not in_use or not scene.render.use_compositing:
        return []
    covered = {node.layer for node in tree.nodes if node.bl_idname == "CompositorNodeRLayers"
               and (node.scene is None or node.scene == scene)}
    return [layer.name for layer in scene.view_layers if layer.use and layer.name not in covered]


def ensure_render_layers_nodes(scene) -> list[str]:
    """Add an (unlinked) Render Layers node for each layer that lacks one; returns the layers fixed."""
    missing = view_layers_without_render_layers_node(scene)
    tree = compositor_tree(scene, create=False)
    for index, layer in enumerate(missing):
        node = tree.nodes.new("CompositorNodeRLayers")
        node.scene = scene
        node.layer = layer
        node.label = f"KPRCAN keeps {layer}'s passes"
        node.location = (-700, -300 * index)
    return missing


def image_node_output(node, pass_name: str):
    """Output socket of a compositor Image node for pass ``pass_name`` of a multilayer image."""
    if pass_name == "Combined":  # 4.x names the combined socket "Image" for single-layer images
        for name in ("Combined", "Image"):
            if name in node.outputs:
                return node.outputs[name]
    return node.outputs.get(pass_name)


# --- denoiser settings of Cycles ----------------------------------------------------------------

def cycles_denoising_enabled(scene) -> bool:
    return bool(getattr(scene.cycles, "use_denoising", False))


def disable_cycles_denoising(scene) -> None:
    """Turn off Cycles' own denoiser for final renders (viewport denoising is left alone)."""
    if hasattr(scene.cycles, "use_denoising"):
        scene.cycles.use_denoising = False
