"""The Blender extension, installed from its built zip into pip bpy 4.5 and driven like a user would.

One bpy subprocess (module fixture) installs the linux-x64 zip, renders a tiny scene, runs the
operators and handlers and reports what it saw; the tests below check one behaviour each. The model is
the fixed ``guided`` filter from tests/onnx_models.py, set through the add-on preferences.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from addon_harness import built_linux_zip, run_bpy
from onnx_models import save_model

from denoiser_core import read_exr

pytestmark = pytest.mark.slow

SESSION = r"""
import os, time
from pathlib import Path
import bpy

out = Path(OUT)
seen = {}
try:
    started = time.perf_counter()
    module = install(ZIP)
    seen["install_seconds"] = time.perf_counter() - started
    addon = sys.modules[module]
    prefs = preferences()
    seen["device_items"] = [item[0] for item in addon.preferences._devices(None, None)]
    seen["tile_default"] = prefs.tile_size
    from types import SimpleNamespace
    seen["tile_choices"] = [addon.preferences.tile_choice(SimpleNamespace(tile_size=size))
                            for size in (0, 1, 63, 64, 700)]
    prefs.model, prefs.model_path, prefs.device, prefs.output_dir = "CUSTOM", MODEL, "cpu", str(out) + "/"
    try:
        bpy.ops.kprcan.denoise_last_render()
    except RuntimeError as error:
        seen["no_render_error"] = str(error)

    build_scene(samples=128)                       # low-noise reference of the same scene
    bpy.ops.render.render()
    scene = bpy.context.scene
    with addon.compat.temporary_image_settings(scene, addon.compat.set_multilayer_exr):
        addon.render_io.render_result_image().save_render(str(out / "reference.exr"), scene=scene)

    scene.cycles.samples = 1                       # noisy enough for a fixed blur to help clearly
    scene.cycles.seed = 11
    scene.cycles.use_denoising = True
    scene.kprcan.enabled = True
    info = addon.render_setup.model_info(MODEL)
    seen["missing_before"] = addon.render_setup.missing_passes(scene, info)
    seen["configure"] = list(bpy.ops.kprcan.configure_passes())
    seen["missing_after"] = addon.render_setup.missing_passes(scene, info)
    seen["cycles_denoising_after"] = scene.cycles.use_denoising

    bpy.ops.render.render()
    seen["denoise"] = list(bpy.ops.kprcan.denoise_last_render())
    image = bpy.data.images.get("KPRCAN Denoised")
    seen["image_path"] = bpy.path.abspath(image.filepath) if image else None

    seen["insert"] = list(bpy.ops.kprcan.insert_compositor_nodes())
    tree = addon.compat.compositor_tree(scene, create=False)
    node = tree.nodes.get("KPRCAN Denoised")
    seen["node_image"] = node.image.name if node else None
    seen["node_outputs"] = [s.name for s in node.outputs] if node else []
    output = addon.compat.compositor_output_socket(tree)
    seen["output_link"] = [(l.from_node.name, l.from_socket.name) for l in output.links]

    # the threaded path the UI takes: worker thread, then the timer's poll finishes on the main thread
    bpy.data.images.remove(image)
    state = addon.actions.denoise_last_render(scene, inline=False)
    seen["threaded_running"] = state.running or addon.runner.busy()
    for _ in range(600):
        addon.runner.poll()
        if not addon.runner.busy():
            break
        time.sleep(0.05)
    seen["threaded_image"] = bpy.data.images.get("KPRCAN Denoised") is not None
    seen["threaded_message"] = addon.runner.last_message

    bpy.data.images.remove(bpy.data.images["KPRCAN Denoised"])   # "Denoise after render" handler
    scene.kprcan.denoise_after_render = True
    bpy.ops.render.render()
    seen["after_render_image"] = bpy.data.images.get("KPRCAN Denoised") is not None
    scene.kprcan.denoise_after_render = False

    scene.kprcan.denoise_animation = True              # animation frames, denoised as they are written
    prefs.output_dir = ""                              # default: next to the frames
    scene.frame_end = 2
    bpy.ops.kprcan.configure_passes()
    scene.render.filepath = str(out / "anim" / "frame_")
    bpy.ops.render.render(animation=True)
    seen["anim_files"] = sorted(p.name for p in (out / "anim").iterdir())
    scene.kprcan.denoise_animation = False

    prefs.model_path = str(out / "missing.onnx")
    try:
        bpy.ops.kprcan.denoise_last_render()
        seen["bad_model_error"] = None
    except RuntimeError as error:
        seen["bad_model_error"] = str(error)

    import onnxruntime, denoiser_core
    seen["onnxruntime_file"], seen["core_file"] = onnxruntime.__file__, denoiser_core.__file__
    seen["site_packages"] = extension_site_packages()
    seen["extension_dir"] = os.path.dirname(addon.__file__)
    poll = addon.runner.poll
finally:
    disable()
seen["leftovers"] = leftovers()
seen["leftovers"]["timer"] = bpy.app.timers.is_registered(poll)
emit(**seen)
"""


@pytest.fixture(scope="module", params=["bpy4.5", pytest.param("bpy5.0", marks=pytest.mark.bpy5)])
def session(request, tmp_path_factory):
    """What one Blender session saw; bpy 5.0 runs in the side environment (skipped when absent) and has
    no onnxruntime of its own: there the extension's wheels are the only runtime."""
    python = request.getfixturevalue("bpy5_python") if request.param == "bpy5.0" else None
    root = tmp_path_factory.mktemp("addon")
    model = save_model(root / "models", "guided")
    out = root / "out"
    out.mkdir()
    script = f"ZIP = {str(built_linux_zip())!r}\nMODEL = {str(model)!r}\nOUT = {str(out)!r}\n" + SESSION
    seen, output = run_bpy(script, root / "user", timeout=400, python=python)
    seen.update(out=out, user_dir=root / "user", python=python)
    yield seen
    shutil.rmtree(root / "user", ignore_errors=True)  # the installed extension: about 700 MB


def test_installs_and_runs_the_bundled_wheels_and_core(session):
    assert session["onnxruntime_file"].startswith(session["site_packages"])
    assert session["core_file"].startswith(session["extension_dir"])
    assert "cpu" in session["device_items"] and "cuda" in session["device_items"]  # onnxruntime-gpu


def test_tile_size_preference_is_automatic_by_default_and_never_tiny(session):
    assert session["tile_default"] == 0  # the core chooses (a 1080p frame in one tile)
    assert session["tile_choices"] == [0, 64, 64, 64, 700]


def test_configure_passes_enables_what_the_model_needs(session):
    assert session["configure"] == ["FINISHED"]
    lacking = session["missing_before"]["ViewLayer"]
    assert {"diffuse_direct", "glossy_color", "denoising_albedo"} <= set(lacking)
    assert session["missing_after"] == {}
    assert session["cycles_denoising_after"] is False


def _rgb_error(path, reference, pass_name):
    pixels = read_exr(path).find("ViewLayer", pass_name).hwc[..., :3]
    return float(np.mean((np.clip(pixels, 0, 1) - np.clip(reference, 0, 1)) ** 2))


def test_denoised_last_render_is_closer_to_the_reference(session):
    assert session["denoise"] == ["FINISHED"]
    reference = read_exr(session["out"] / "reference.exr").find("ViewLayer", "Combined").hwc[..., :3]
    assert read_exr(session["image_path"]).layers == ["ViewLayer"]  # the compositor's noisy layer dropped
    noisy = _rgb_error(session["image_path"], reference, "Noisy Image")
    denoised = _rgb_error(session["image_path"], reference, "Combined")
    assert denoised < 0.6 * noisy, (denoised, noisy)


def test_compositor_gets_the_denoised_passes_wired_to_the_output(session):
    assert session["insert"] == ["FINISHED"]
    assert session["node_image"] == "KPRCAN Denoised"
    assert {"Combined", "Denoised Diffuse", "Denoised Specular"} <= set(session["node_outputs"])
    assert session["output_link"] == [["KPRCAN Denoised", "Combined"]]


def test_threaded_denoise_finishes_through_the_poll_timer(session):
    assert session["threaded_running"] is True
    assert session["threaded_image"] is True
    assert "done" in session["threaded_message"]


def test_denoise_after_render_and_animation_handlers(session):
    assert session["after_render_image"] is True
    files = session["anim_files"]
    assert files == ["frame_0001.exr", "frame_0001_denoised.exr", "frame_0002.exr", "frame_0002_denoised.exr"]
    denoised = read_exr(session["out"] / "anim" / "frame_0002_denoised.exr")
    names = {p.name for p in denoised.passes}
    assert {"Combined", "Noisy Image", "Denoised Diffuse", "Denoised Specular"} <= names


def test_errors_are_reported_not_swallowed(session):
    assert "no render to denoise" in session["no_render_error"]
    assert "missing.onnx" in session["bad_model_error"] and "not found" in session["bad_model_error"]


def test_disabling_leaves_nothing_behind(session):
    assert session["leftovers"] == {"handlers": {}, "scene_property": False, "operators": [], "panel": False,
                                    "core_loaded": False, "timer": False}


def test_python_exits_while_the_extension_is_still_enabled(session):
    """pip bpy 4.5 hangs on exit while Python handlers/timers are registered; the add-on removes its own
    at exit (run_bpy's timeout would fail this test)."""
    seen, _output = run_bpy("import bpy\nbpy.ops.preferences.addon_enable(module=MODULE)\n"
                            "emit(enabled=MODULE in bpy.context.preferences.addons)",
                            session["user_dir"], timeout=90, python=session["python"])
    assert seen["enabled"] is True
