"""Add-on preferences: which model, which device, tile size, where denoised files go."""

from __future__ import annotations

import zlib

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from . import device_probe
from .core import core_or_none, import_error
from .worker import DEVICE_LABELS

CUSTOM = "CUSTOM"
DEFAULT = "DEFAULT"
AUTO = "auto"

# Blender keeps only pointers to the strings enum item callbacks return: hold them here.
_model_items: list[tuple[str, str, str]] = []
_device_items: list[tuple[str, str, str]] = []


def _models(_self, _context):
    core = core_or_none()
    items = [(DEFAULT, "Default", "The default model (\"fast\" when shipped, else the first one found)",
              "NONE", 0)]
    for info in core.list_models() if core else []:
        description = f"{info.summary()} -- {info.path}"
        items.append((info.name, info.name, description, "NONE", _stable_number(info.name)))
    items.append((CUSTOM, "Model file...", "Use the .onnx file given in Model File", "FILE", 1))
    _model_items[:] = items
    return _model_items


def _stable_number(identifier: str) -> int:
    """Enum value that does not change when items come and go (Blender stores the number, not the name)."""
    return 2 + zlib.crc32(identifier.encode()) % 1_000_000_000


def _devices(_self, _context):
    """Automatic and the devices that can run here (the probe's answer; CPU until it comes)."""
    probed = device_probe.probed()
    items = [(AUTO, "Automatic", "Best accelerator that can run here, else the CPU", "NONE", 0)]
    usable = [name for name, (ok, _reason) in probed.items() if ok] if probed else ["cpu"]
    for name in usable:
        label = DEVICE_LABELS.get(name, name)
        items.append((name, label, f"Run on {label}", "NONE", _stable_number(name)))
    _device_items[:] = items
    return _device_items


class KPRCAN_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    model: EnumProperty(name="Model", items=_models,
                        description="Denoising network: a model shipped with the add-on or a file")
    model_path: StringProperty(name="Model File", subtype="FILE_PATH",
                               description="An .onnx model following the kprcan contract")
    device: EnumProperty(name="Device", items=_devices,
                         description="Where the network runs (onnxruntime execution provider)")
    tile_size: IntProperty(name="Tile Size", default=0, min=0, max=8192,  # 0: denoiser_core's AUTO_TILE
                           description="Largest tile edge in pixels (each tile also reads the model's "
                                       "context around it); smaller uses less memory. 0: chosen per "
                                       "image (a 1080p frame in one tile); at least 64 otherwise")
    output_dir: StringProperty(
        name="Output Folder", subtype="DIR_PATH", default="",
        description="Where denoised EXRs are written; empty: the folder of the scene's render output")

    def draw(self, _context):
        layout = self.layout
        error = import_error()
        if error:
            layout.label(text=error, icon="ERROR")
        layout.prop(self, "model")
        if self.model == CUSTOM:
            layout.prop(self, "model_path")
        layout.prop(self, "device")
        layout.prop(self, "tile_size")
        layout.prop(self, "output_dir")


def preferences(context=None) -> KPRCAN_AddonPreferences:
    context = context or bpy.context
    return context.preferences.addons[__package__].preferences


class SettingsError(Exception):
    """A setting the user must fix before anything can run (reported as one line)."""


MIN_TILE = 64  # smaller cores would repeat the model's context thousands of times per frame


def tile_choice(prefs) -> int:
    """The preference as the core takes it: 0 (automatic), else at least MIN_TILE."""
    return 0 if prefs.tile_size <= 0 else max(prefs.tile_size, MIN_TILE)


def model_choice(prefs) -> str | None:
    """Name or path given to denoiser_core.load_model (None: its default model)."""
    if prefs.model == CUSTOM:
        path = bpy.path.abspath(prefs.model_path).strip()
        if not path:
            raise SettingsError("no model file chosen (Preferences > Add-ons > KPRCAN Denoiser > Model File)")
        return path
    return None if prefs.model in ("", DEFAULT) else prefs.model


CLASSES = (KPRCAN_AddonPreferences,)
