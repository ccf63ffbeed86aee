"""Synthetic Cycles-like multilayer EXRs written with OpenEXR, named exactly as Blender writes them.

The passes satisfy Cycles' decomposition (Combined = DiffCol*(DiffDir+DiffInd) + GlossCol*(GlossDir+GlossInd)
+ TransCol*(TransDir+TransInd) + VolumeDir + VolumeInd + Emit + Env), with smooth images plus noise, so
they behave like a render to everything that reads them. Channel names follow
/work/shared/reference/cycles-4.5-multilayer-channels.txt (4.x) or the 5.0 spelling (``Diffuse Direct``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import OpenEXR

from denoiser_core.passes import PASS_TABLE, blender_pass_name

# The passes a 4.5 render with every denoiser pass enabled writes (no Noisy Image: Blender's denoiser off;
# no Vector: motion is no denoiser pass).
ALL_RENDER_PASSES = [name for name in PASS_TABLE if name not in ("noisy_image", "vector")]
COMPONENTS = {4: "RGBA", 3: "RGB", 1: "Z"}
VECTOR_PASSES = {"normal", "denoising_normal"}

BLENDER_HEADER = {
    "BlenderMultiChannel": "Blender V2.55.1 and newer", "Camera": "Camera", "Scene": "Scene",
    "Frame": "001", "RenderTime": "00:01.25", "cycles.ViewLayer.samples": "16",
}


def components(canonical: str) -> str:
    return "XYZ" if canonical in VECTOR_PASSES else COMPONENTS[PASS_TABLE[canonical][2]]


def synthetic_passes(height: int = 48, width: int = 64, seed: int = 0,
                     noise: float = 0.3) -> dict[str, np.ndarray]:
    """Canonical pass name -> (H, W, C) float32, consistent with the decomposition."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)

    def smooth(phase: float, low: float, high: float) -> np.ndarray:
        channels = [0.5 + 0.5 * np.sin(6 * u + 4 * v + phase + k) * np.cos(3 * v - 2 * u + k)
                    for k in range(3)]
        return (low + (high - low) * np.stack(channels, axis=-1)).astype(np.float32)

    def noisy(phase: float, low: float, high: float) -> np.ndarray:
        clean = smooth(phase, low, high)
        grain = 1 + noise * rng.standard_normal(clean.shape).astype(np.float32)
        return np.maximum(clean * grain, 0).astype(np.float32)

    checker = ((np.floor(x / 8) + np.floor(y / 8)) % 2)[..., None].astype(np.float32)
    p = {
        "diffuse_color": (0.2 + 0.6 * checker * smooth(0.0, 0.5, 1.0)).astype(np.float32),
        "diffuse_direct": noisy(1.0, 0.2, 1.5), "diffuse_indirect": noisy(2.0, 0.0, 0.4),
        "glossy_color": smooth(3.0, 0.1, 0.8), "glossy_direct": noisy(4.0, 0.0, 2.0),
        "glossy_indirect": noisy(5.0, 0.0, 0.3), "transmission_color": smooth(6.0, 0.0, 0.5),
        "transmission_direct": noisy(7.0, 0.0, 0.6), "transmission_indirect": noisy(8.0, 0.0, 0.3),
        "volume_direct": noisy(9.0, 0.0, 0.05), "volume_indirect": noisy(10.0, 0.0, 0.02),
        "emission": np.where((u > 0.7)[..., None] & (v < 0.3)[..., None], 3.0, 0.0).astype(np.float32)
        * np.ones(3, np.float32),
        "environment": np.where((v < 0.1)[..., None], smooth(11.0, 0.2, 0.6), 0).astype(np.float32),
    }
    rgb = (p["diffuse_color"] * (p["diffuse_direct"] + p["diffuse_indirect"])
           + p["glossy_color"] * (p["glossy_direct"] + p["glossy_indirect"])
           + p["transmission_color"] * (p["transmission_direct"] + p["transmission_indirect"])
           + p["volume_direct"] + p["volume_indirect"] + p["emission"] + p["environment"])
    p["combined"] = np.concatenate([rgb, np.ones_like(rgb[..., :1])], axis=-1).astype(np.float32)
    normal = np.stack([u - 0.5, v - 0.5, np.ones_like(u)], axis=-1)
    p["normal"] = (normal / np.linalg.norm(normal, axis=-1, keepdims=True)).astype(np.float32)
    p["denoising_normal"] = p["normal"].copy()
    p["denoising_albedo"] = np.clip(p["diffuse_color"] + 0.3 * p["glossy_color"], 0, 1).astype(np.float32)
    p["depth"] = (5.0 + 3.0 * v)[..., None].astype(np.float32)
    p["denoising_depth"] = p["depth"].copy()
    return p


def blender_channels(passes: dict[str, np.ndarray], layer: str = "ViewLayer",
                     blender_major: int = 4) -> dict[str, np.ndarray]:
    """Full channel name (``ViewLayer.DiffDir.R``) -> (H, W) plane."""
    channels = {}
    for canonical, image in passes.items():
        pass_name = blender_pass_name(canonical, blender_major)
        for index, component in enumerate(components(canonical)):
            name = ".".join(part for part in (layer, pass_name, component) if part)
            channels[name] = np.ascontiguousarray(image[..., index])
    return channels


def write_blender_exr(path: Path, passes: dict[str, np.ndarray] | None = None, *,
                      layers: tuple[str, ...] = ("ViewLayer",), blender_major: int = 4, half: bool = False,
                      compression=OpenEXR.ZIP_COMPRESSION,
                      extra: dict[str, np.ndarray] | None = None) -> Path:
    """A single-part multilayer EXR like Blender's, every view layer in ``layers`` holding ``passes``."""
    passes = synthetic_passes() if passes is None else passes
    channels = {}
    for layer in layers:
        channels.update(blender_channels(passes, layer, blender_major))
    channels.update(extra or {})
    dtype = np.float16 if half else np.float32
    channels = {name: plane.astype(dtype) if plane.dtype != np.uint32 else plane
                for name, plane in channels.items()}
    header = dict(BLENDER_HEADER, compression=compression, type=OpenEXR.scanlineimage)
    path.parent.mkdir(parents=True, exist_ok=True)
    OpenEXR.File(header, channels).write(str(path))
    return path


def read_channels(path: Path) -> dict[str, np.ndarray]:
    """Raw channel name -> (H, W) plane of every part (for assertions)."""
    exr = OpenEXR.File(str(path), separate_channels=True)
    return {name: np.array(channel.pixels) for part in exr.parts for name, channel in part.channels.items()}


def mirror_tiled_render(width: int, height: int, path: Path) -> Path:
    """examples/noisy.exr (a real Cycles render, 54 float32 channels) with every pass mirror-tiled to
    width x height: benchmarks/benchmark_speed.py's frame synthesis."""
    import importlib.util
    import sys

    repo = Path(__file__).resolve().parents[1]
    script = repo / "benchmarks" / "benchmark_speed.py"
    spec = importlib.util.spec_from_file_location("benchmark_speed", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module.synthesise(repo / "examples" / "noisy.exr", width, height, path)
