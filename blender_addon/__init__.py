"""KPRCAN Denoiser: neural denoising of Cycles renders inside Blender (extension entry point).

Each module lists its Blender classes in ``CLASSES``; they are registered in module order and
unregistered in reverse, so disabling the extension leaves no class, property, handler or timer behind.
"""

from __future__ import annotations

import atexit

import bpy

from . import core, handlers, operators, panels, preferences, properties, runner

MODULES = (preferences, properties, operators, panels)


def register() -> None:
    for module in MODULES:
        for cls in module.CLASSES:
            bpy.utils.register_class(cls)
    properties.register_properties()
    handlers.register()
    runner.register()
    atexit.register(_release_at_exit)


def _release_at_exit() -> None:
    """Remove handlers and the timer when Python exits with the add-on still enabled: Blender as a
    Python module (pip bpy 4.x) otherwise hangs on exit while Python callbacks remain registered."""
    try:
        runner.unregister()
        handlers.unregister()
    except Exception:  # interpreter shutdown: nothing left worth reporting
        pass


def unregister() -> None:
    atexit.unregister(_release_at_exit)
    runner.unregister()
    handlers.unregister()
    properties.unregister_properties()
    for module in reversed(MODULES):
        for cls in reversed(module.CLASSES):
            bpy.utils.unregister_class(cls)
    core.unload()
