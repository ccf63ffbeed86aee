"""Putting the denoised render into the compositor: an Image node wired to the compositor output.

The node holds one image, "KPRCAN Denoised", which every later still render replaces with its own
denoised version (handlers.on_render_complete). The links it replaced at the compositor output are kept
on the node, so Restore Links (and Ctrl+Z) bring the user's own compositing back.
"""

from __future__ import annotations

import json

from . import compat

NODE_NAME = "KPRCAN Denoised"
PASSES = ("Combined", "Denoised Diffuse", "Denoised Specular")
REPLACED_LINKS = "kprcan_replaced_links"   # node property: [[from node name, from socket identifier], ...]
OUTPUT_NODES = ("CompositorNodeComposite", "NodeGroupOutput")


def insert_denoised_node(scene, image, view_layer: str | None = None):
    """An Image node (created or reused) holding ``image``; its Combined (the denoised beauty) drives
    the compositor output, its Denoised Diffuse / Denoised Specular outputs are there to wire further.

    Returns (node, descriptions of the user's links it replaced at the output).
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
    users = [link for link in output.links if link.from_node != node]
    if users:  # the user's own compositing: remembered (a second insert keeps the first record)
        node[REPLACED_LINKS] = json.dumps([[link.from_node.name, link.from_socket.identifier]
                                           for link in users])
    replaced = [f"{link.from_node.name} > {link.from_socket.name}" for link in users]
    for link in list(output.links):
        tree.links.remove(link)
    tree.links.new(beauty, output)
    node.location = (output.node.location.x - 350, output.node.location.y)
    compat.ensure_render_layers_nodes(scene)  # 5.0 would otherwise stop rendering the passes
    return node, replaced


def node_in_use(scene):
    """Our node when it drives the compositor output (read only: safe in draw code), else None."""
    tree = compat.compositor_tree(scene, create=False)
    node = tree.nodes.get(NODE_NAME) if tree is not None else None
    if node is None:
        return None
    driving = any(link.to_node.bl_idname in OUTPUT_NODES for socket in node.outputs for link in socket.links)
    return node if driving else None


def restore_links(scene) -> list[str]:
    """Remove our node and relink what it replaced at the output; returns the links restored."""
    tree = compat.compositor_tree(scene, create=False)
    node = tree.nodes.get(NODE_NAME) if tree is not None else None
    if node is None:
        return []
    replaced = json.loads(node.get(REPLACED_LINKS, "[]"))
    tree.nodes.remove(node)
    output = compat.compositor_output_socket(tree)
    restored = []
    for node_name, identifier in replaced:
        source = tree.nodes.get(node_name)
        socket = next((s for s in source.outputs if s.identifier == identifier), None) if source else None
        if socket is not None:
            tree.links.new(socket, output)
            restored.append(f"{node_name} > {socket.name}")
    return restored


def refresh(scene) -> None:
    """Ask Blender to composite again (the UI re-runs the compositor on the Render Result)."""
    tree = compat.compositor_tree(scene, create=False)
    if tree is not None:
        tree.update_tag()


def missing_outputs(node) -> list[str]:
    """Passes the denoised file should give the node but it lacks (empty when all is well)."""
    return [name for name in PASSES if compat.image_node_output(node, name) is None]
