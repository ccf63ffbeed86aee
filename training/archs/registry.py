"""Registry of component networks: a config's ``model.type`` names a class, its other keys are the
constructor's keyword arguments, passed one for one (BasicSR's ARCH_REGISTRY pattern)."""

from __future__ import annotations

import inspect

from torch import nn

ARCH_REGISTRY: dict[str, type[nn.Module]] = {}


def register(name: str):
    """Class decorator: make ``name`` usable as ``model.type`` in configs."""
    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in ARCH_REGISTRY:
            raise ValueError(f"architecture {name!r} registered twice")
        ARCH_REGISTRY[name] = cls
        cls.registry_name = name
        return cls
    return add


def arch_arguments(name: str) -> list[str]:
    """Keyword arguments ``model.type: name`` accepts in a config (``in_channels`` is set by the graph)."""
    params = inspect.signature(ARCH_REGISTRY[name].__init__).parameters
    return [p for p in params if p not in ("self", "in_channels")]


def build_arch(spec: dict, in_channels: int) -> nn.Module:
    """Construct ``spec['type']`` with the remaining keys of ``spec`` as keyword arguments."""
    kwargs = dict(spec)
    name = kwargs.pop("type", None)
    if name not in ARCH_REGISTRY:
        raise ValueError(f"unknown model.type {name!r}; known: {', '.join(sorted(ARCH_REGISTRY))}")
    unknown = sorted(set(kwargs) - set(arch_arguments(name)))
    if unknown:
        raise ValueError(f"model.type {name} takes no argument {', '.join(unknown)}; "
                         f"accepted: {', '.join(arch_arguments(name))}")
    return ARCH_REGISTRY[name](in_channels=in_channels, **kwargs)
