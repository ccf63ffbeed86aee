"""Node materials from a JSON material spec (runs inside a bpy process only).

Spec keys (all optional): ``base_color`` [r,g,b], ``metallic``, ``roughness``, ``transmission``, ``ior``,
``coat``, ``emission`` [r,g,b], ``emission_strength``, ``texture`` {type: noise|voronoi|checker|wave|brick|
image, scale, color2, seed}, ``bump`` {type, scale, strength}, ``normal_map`` {seed, strength},
``roughness_texture`` bool, ``volume`` {density, color, anisotropy, emission} (then no surface unless
``surface`` is true).
"""

from __future__ import annotations

import random

import bpy


def _texture_node(nodes, links, spec: dict, mapping):
    """A procedural colour/factor texture node; returns (node, colour socket, factor socket)."""
    kind = spec.get("type", "noise")
    scale = float(spec.get("scale", 5.0))
    if kind == "noise":
        node = nodes.new("ShaderNodeTexNoise")
        node.inputs["Scale"].default_value = scale
        node.inputs["Detail"].default_value = float(spec.get("detail", 4.0))
        fac = node.outputs["Fac"]
    elif kind == "voronoi":
        node = nodes.new("ShaderNodeTexVoronoi")
        node.inputs["Scale"].default_value = scale
        fac = node.outputs["Distance"]
    elif kind == "checker":
        node = nodes.new("ShaderNodeTexChecker")
        node.inputs["Scale"].default_value = scale
        node.inputs["Color1"].default_value = (*spec.get("color1", (0.8, 0.8, 0.8)), 1.0)
        node.inputs["Color2"].default_value = (*spec.get("color2", (0.1, 0.1, 0.1)), 1.0)
        fac = node.outputs["Fac"]
    elif kind == "wave":
        node = nodes.new("ShaderNodeTexWave")
        node.inputs["Scale"].default_value = scale
        node.inputs["Distortion"].default_value = float(spec.get("distortion", 4.0))
        fac = node.outputs["Fac"]
    elif kind == "brick":
        node = nodes.new("ShaderNodeTexBrick")
        node.inputs["Scale"].default_value = scale
        node.inputs["Color1"].default_value = (*spec.get("color1", (0.6, 0.25, 0.15)), 1.0)
        node.inputs["Color2"].default_value = (*spec.get("color2", (0.35, 0.12, 0.08)), 1.0)
        node.inputs["Mortar"].default_value = (0.7, 0.7, 0.68, 1.0)
        fac = node.outputs["Fac"]
    elif kind == "image":
        node = nodes.new("ShaderNodeTexImage")
        node.image = generated_image(int(spec.get("seed", 0)), int(spec.get("size", 128)))
        node.interpolation = "Closest" if spec.get("pixelated") else "Linear"
        fac = node.outputs["Color"]
    else:
        raise ValueError(f"unknown texture type {kind!r}")
    links.new(mapping.outputs["Vector"], node.inputs["Vector"])
    return node, node.outputs["Color"], fac


def generated_image(seed: int, size: int, normal_map: bool = False):
    """A deterministic synthetic image (stripes, blocks and blobs; or a tangent normal map of them)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    height = np.zeros((size, size))
    for _ in range(6):
        fx, fy, phase = rng.uniform(1, 12), rng.uniform(1, 12), rng.uniform(0, 6.3)
        height += np.sin(2 * np.pi * (fx * xx + fy * yy) + phase) * rng.uniform(0.2, 1.0)
    blocks = rng.uniform(0, 1, (8, 8)).repeat(size // 8 + 1, 0).repeat(size // 8 + 1, 1)[:size, :size]
    height = 0.5 + 0.25 * np.tanh(height) + 0.25 * (blocks > 0.6)
    if normal_map:
        gy, gx = np.gradient(height * 4.0)
        rgb = np.stack([0.5 - 0.5 * gx, 0.5 - 0.5 * gy, np.full_like(gx, 0.9)], -1)
    else:
        palette = rng.uniform(0.05, 0.9, (2, 3))
        rgb = palette[0] * height[..., None] + palette[1] * (1 - height[..., None])
    rgba = np.concatenate([rgb, np.ones((size, size, 1))], -1).astype(np.float32)
    image = bpy.data.images.new(f"gen_{seed}_{int(normal_map)}", size, size, float_buffer=True)
    image.pixels.foreach_set(rgba.ravel())
    if normal_map:
        image.colorspace_settings.name = "Non-Color"
    image.pack()
    return image


def make_material(name: str, spec: dict):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    output = nodes.new("ShaderNodeOutputMaterial")
    volume = spec.get("volume")
    if volume is None or spec.get("surface"):
        links.new(_principled(nodes, links, spec).outputs["BSDF"], output.inputs["Surface"])
    if volume is not None:
        vol = nodes.new("ShaderNodeVolumePrincipled")
        vol.inputs["Color"].default_value = (*volume.get("color", (0.8, 0.8, 0.8)), 1.0)
        vol.inputs["Density"].default_value = float(volume.get("density", 0.5))
        vol.inputs["Anisotropy"].default_value = float(volume.get("anisotropy", 0.0))
        if volume.get("noise_density"):
            # smoke-like: density modulated by a noise texture
            noise = nodes.new("ShaderNodeTexNoise")
            noise.inputs["Scale"].default_value = float(volume.get("noise_scale", 2.0))
            ramp = nodes.new("ShaderNodeMath")
            ramp.operation = "MULTIPLY"
            ramp.inputs[1].default_value = float(volume.get("density", 0.5)) * 2.0
            links.new(noise.outputs["Fac"], ramp.inputs[0])
            links.new(ramp.outputs["Value"], vol.inputs["Density"])
        links.new(vol.outputs["Volume"], output.inputs["Volume"])
    return mat


def _principled(nodes, links, spec: dict):
    bsdf = nodes.new("ShaderNodeBsdfPrincipled")
    inputs = bsdf.inputs
    inputs["Base Color"].default_value = (*spec.get("base_color", (0.8, 0.8, 0.8)), 1.0)
    inputs["Metallic"].default_value = float(spec.get("metallic", 0.0))
    inputs["Roughness"].default_value = float(spec.get("roughness", 0.5))
    inputs["IOR"].default_value = float(spec.get("ior", 1.45))
    inputs["Transmission Weight"].default_value = float(spec.get("transmission", 0.0))
    inputs["Coat Weight"].default_value = float(spec.get("coat", 0.0))
    if spec.get("emission_strength", 0.0) > 0:
        inputs["Emission Color"].default_value = (*spec.get("emission", (1.0, 1.0, 1.0)), 1.0)
        inputs["Emission Strength"].default_value = float(spec["emission_strength"])
    texcoord = nodes.new("ShaderNodeTexCoord")
    mapping = nodes.new("ShaderNodeMapping")
    rnd = random.Random(spec.get("texture", {}).get("seed", 0) if spec.get("texture") else 0)
    mapping.inputs["Location"].default_value = (rnd.uniform(0, 9), rnd.uniform(0, 9), rnd.uniform(0, 9))
    links.new(texcoord.outputs["Generated" if spec.get("generated_coords") else "UV"],
              mapping.inputs["Vector"])
    if spec.get("texture"):
        tex, color, fac = _texture_node(nodes, links, spec["texture"], mapping)
        if spec["texture"]["type"] in ("noise", "voronoi", "wave"):
            # tint the factor between the base colour and a second colour
            mix = nodes.new("ShaderNodeMix")
            mix.data_type = "RGBA"
            links.new(fac, mix.inputs["Factor"])
            mix.inputs["A"].default_value = (*spec.get("base_color", (0.8, 0.8, 0.8)), 1.0)
            mix.inputs["B"].default_value = (*spec["texture"].get("color2", (0.1, 0.1, 0.1)), 1.0)
            color = mix.outputs["Result"]
        links.new(color, inputs["Base Color"])
        if spec.get("roughness_texture"):
            rough = nodes.new("ShaderNodeMapRange")
            rough.inputs["To Min"].default_value = 0.05
            rough.inputs["To Max"].default_value = 0.7
            links.new(fac, rough.inputs["Value"])
            links.new(rough.outputs["Result"], inputs["Roughness"])
    if spec.get("bump"):
        bump_spec = spec["bump"]
        _tex, _color, fac = _texture_node(nodes, links, bump_spec, mapping)
        bump = nodes.new("ShaderNodeBump")
        bump.inputs["Strength"].default_value = float(bump_spec.get("strength", 0.5))
        bump.inputs["Distance"].default_value = float(bump_spec.get("distance", 0.05))
        links.new(fac, bump.inputs["Height"])
        links.new(bump.outputs["Normal"], inputs["Normal"])
    elif spec.get("normal_map"):
        nm_spec = spec["normal_map"]
        tex = nodes.new("ShaderNodeTexImage")
        tex.image = generated_image(int(nm_spec.get("seed", 0)), 128, normal_map=True)
        links.new(mapping.outputs["Vector"], tex.inputs["Vector"])
        nmap = nodes.new("ShaderNodeNormalMap")
        nmap.inputs["Strength"].default_value = float(nm_spec.get("strength", 1.0))
        links.new(tex.outputs["Color"], nmap.inputs["Color"])
        links.new(nmap.outputs["Normal"], inputs["Normal"])
    return bsdf
