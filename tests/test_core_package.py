"""denoiser_core imports itself relatively, so a bundled copy works under any package name."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter whose only way to the package is the copy in the current folder.
EXERCISE = textwrap.dedent("""
    import importlib, sys
    from pathlib import Path
    import numpy as np

    name = sys.argv[1]
    if name == "addon_loader":  # the Blender extension's loader: bundled copy as top-level denoiser_core
        import importlib.util
        spec = importlib.util.spec_from_file_location("loader", Path("bundle") / "core.py")
        loader = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loader)
        dc = loader.core()
    else:
        dc = importlib.import_module(name)
    cli = importlib.import_module(dc.__name__ + ".cli")
    assert Path(dc.__file__).resolve().parent == (Path("bundle") / "denoiser_core").resolve(), dc.__file__
    image = dc.ExrImage(passes=[])
    image.set_pass("ViewLayer", "Combined", "RGBA", np.full((4, 6, 4), 0.5, np.float32))
    dc.write_exr(image, Path("out.exr"))
    assert dc.read_exr("out.exr").find("ViewLayer", "Combined").hwc.shape == (4, 6, 4)
    assert cli.main(["info", "out.exr"]) == 0  # imports commands, models, inference lazily
    print("LOADED", sorted(n for n in sys.modules if n.split(".")[0] == "denoiser_core"))
""")


def _run_bundled(tmp_path: Path, module: str) -> str:
    bundle = tmp_path / "bundle"
    shutil.copytree(REPO / "denoiser_core", bundle / "denoiser_core",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (bundle / "__init__.py").write_text("")
    shutil.copy(REPO / "blender_addon" / "core.py", bundle / "core.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HOME=str(tmp_path), KPRCAN_MODEL_PATH="")
    done = subprocess.run([sys.executable, "-c", EXERCISE, module],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("LOADED ", 1)[1]


def test_a_bundled_copy_imports_itself_under_its_own_package_name(tmp_path):
    # nothing named top-level denoiser_core may be imported: the copy must not reach another installation
    assert _run_bundled(tmp_path, "bundle.denoiser_core").strip() == "[]"


def test_the_blender_extension_loader_still_loads_the_bundled_copy(tmp_path):
    # blender_addon/core.py registers the copy under the top-level name; relative imports work there too
    _run_bundled(tmp_path, "addon_loader")  # the asserts in EXERCISE run on the module it returns
