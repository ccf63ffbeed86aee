"""Access to the ``denoiser_core`` package from inside Blender.

The extension zip carries its own copy (``<extension>/denoiser_core``, put there by build.py) next to its
shipped ``models`` folder. A development checkout has none and uses the importable top-level package.

The copy is imported under the top-level name ``denoiser_core`` so that ``denoise.py`` and the add-on
modules share one module object with a development checkout's layout (the package itself only uses
relative imports, so a subpackage import would work too). Importing is deferred to first use so enabling
the add-on stays fast and a broken wheel shows up as a message in the panel instead of a failed enable.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

PACKAGE = "denoiser_core"
BUNDLED = Path(__file__).resolve().parent / PACKAGE

_import_error: str | None = None


def core():
    """The denoiser_core module (raises ImportError with a readable message when it cannot load)."""
    global _import_error
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    try:
        if (BUNDLED / "__init__.py").is_file():
            return _import_bundled()
        return importlib.import_module(PACKAGE)
    except ImportError as error:
        _import_error = f"denoiser_core could not load: {error}"
        raise ImportError(_import_error) from error


def core_or_none():
    """denoiser_core, or None when it cannot load (see ``import_error()``): for UI drawing code."""
    try:
        return core()
    except ImportError:
        return None


def import_error() -> str | None:
    return _import_error


def _import_bundled():
    spec = importlib.util.spec_from_file_location(
        PACKAGE, BUNDLED / "__init__.py", submodule_search_locations=[str(BUNDLED)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        _forget_bundled()
        raise
    return module


def _forget_bundled() -> None:
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        origin = getattr(sys.modules[name], "__file__", None) or ""
        if not origin or Path(origin).resolve().is_relative_to(BUNDLED):
            del sys.modules[name]


def unload() -> None:
    """Drop the bundled copy from sys.modules (on unregister), so an updated extension loads its own."""
    global _import_error
    _import_error = None
    _forget_bundled()
