"""Putting the denoised render into the compositor: an Image node wired to the compositor output."""

from __future__ import annotations

from . import compat

NODE_NAME = "KPRCAN Denoised"
PASSES = ("Combined", "Denoised Diffuse", "Denoised Specular")


def insert_denoised_node(scene, image, view_layer: str | None = None):
    """An Image node (created or reused) holding ``image``; its Combined (the denoised beauty) drives
    the compositor output, its Denoised Diffuse / Denoised Specular outputs are there to wire further.

    Returns the node. The multilayer image exposes every pass of the denoised file as an output socket.
    """
    tree = compat.compositor_tree(scene, create=True)
    node = tree.nodes.get(NODE_NAME)
    if node is None or node.bl_idname != "CompositorNodeImage":
        node = tree.nodes.new("CompositorNodeImage")
        node.name = NODE_NAME
    node.label = NODE_NAME
    node.image = image
    layers = [item.identifier for item in node.bl_rna.properties["layer"].enum_items] \
        if "layer" in node.bl_rna.properties else []
    if view_layer and view_layer in layers:
        node.layer = view_layer
    output = compat.compositor_output_socket(tree)
    beauty = compat.image_node_output(node, "Combined")
    if beauty is None:
        outputs = [socket.name for socket in node.outputs]
        raise ValueError(f"image {image.name!r} has no Combined pass (node outputs: {outputs})")
    for link in list(output.links):
        tree.links.remove(link)
    tree.links.new(beauty, output)
    node.location = (output.node.location.x - 350, output.node.location.y)
    compat.ensure_render_layers_nodes(scene)  # 5.0 would otherwise stop rendering the passes
    return node


def missing_outputs(node) -> list[str]:
    """Passes the denoised file should give the node but it lacks (empty when all is well)."""
    return [name for name in PASSES if compat.image_node_output(node, name) is None]
