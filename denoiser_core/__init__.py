"""kprcan inference core: numpy + onnxruntime + OpenEXR only (no torch, no bpy).

Public API (the names below; the Blender add-on also uses ``models.resolve_model``, ``passes.PASS_TABLE``,
``passes.PASSES_USED_WHEN_PRESENT``, ``passes.blender_pass_name`` and ``inference.required_passes``)::

    from denoiser_core import (load_model, read_exr, write_exr, denoise_file, Denoiser, ModelInfo,
                               DenoiserError, list_models, available_devices)
"""

from .devices import available_devices
from .errors import DenoiserError
from .exr import ExrImage, ExrPass, read_exr, write_exr
from .inference import Denoiser, DenoiseResult, load_model
from .models import ModelInfo, list_models
from .pipeline import denoise_file, denoise_image

__all__ = [
    "DenoiseResult",
    "Denoiser",
    "DenoiserError",
    "ExrImage",
    "ExrPass",
    "ModelInfo",
    "available_devices",
    "denoise_file",
    "denoise_image",
    "list_models",
    "load_model",
    "read_exr",
    "write_exr",
]
