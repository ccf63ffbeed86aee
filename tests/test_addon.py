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
import os, shutil, time
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
    seen["probe"] = addon.device_probe.wait(180)   # the worker process probes in the background
    seen["device_items"] = [item[0] for item in addon.preferences._devices(None, None)]
    seen["accelerator_problems"] = addon.device_probe.accelerator_problems()
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

    tree = addon.compat.compositor_tree(scene, create=True)   # the user's own compositing first
    output = addon.compat.compositor_output_socket(tree)
    layers_node = next((n for n in tree.nodes if n.bl_idname == "CompositorNodeRLayers"), None) \
        or tree.nodes.new("CompositorNodeRLayers")
    tree.links.new(layers_node.outputs["Image"], output)
    seen["user_link"] = [(l.from_node.name, l.from_socket.name) for l in output.links]
    seen["insert"] = list(bpy.ops.kprcan.insert_compositor_nodes())
    seen["insert_message"] = addon.runner.last_message
    node = tree.nodes.get("KPRCAN Denoised")
    seen["node_image"] = node.image.name if node else None
    seen["node_outputs"] = [s.name for s in node.outputs] if node else []
    seen["output_link"] = [(l.from_node.name, l.from_socket.name) for l in output.links]

    # a later still render: the node must show that render's own denoised image
    shutil.copy(bpy.path.abspath(node.image.filepath), out / "first_node_image.exr")
    sphere = bpy.data.objects["Sphere"]
    scene.frame_set(3)                              # its own output file (the frame is in the name)
    sphere.location.x += 1.5
    bpy.ops.render.render()
    seen["node_file_after_second_render"] = bpy.path.abspath(node.image.filepath)
    seen["status_with_node"] = addon.panels.status_lines(bpy.context)
    sphere.location.x -= 1.5
    scene.frame_set(1)

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
    prefs.device = "auto"                                        # the menu's default
    bpy.ops.render.render()
    seen["after_render_image"] = bpy.data.images.get("KPRCAN Denoised") is not None
    seen["after_render_message"] = addon.runner.last_message
    scene.kprcan.denoise_after_render = False

    scene.kprcan.denoise_animation = True              # animation frames, denoised as they are written
    prefs.output_dir = ""                              # default: next to the frames
    scene.frame_end = 2
    bpy.ops.kprcan.configure_passes()
    scene.render.filepath = str(out / "anim" / "frame_")
    bpy.ops.render.render(animation=True)           # the compositor node is still wired in
    seen["anim_files"] = sorted(p.name for p in (out / "anim").iterdir())
    scene.kprcan.denoise_animation = False

    seen["restore"] = list(bpy.ops.kprcan.restore_compositor_links())
    seen["links_after_restore"] = [(l.from_node.name, l.from_socket.name)
                                   for l in addon.compat.compositor_output_socket(tree).links]
    seen["node_after_restore"] = "KPRCAN Denoised" in tree.nodes

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
    seen.update(out=out, user_dir=root / "user", python=python, output=output)
    yield seen
    shutil.rmtree(root / "user", ignore_errors=True)  # the installed extension: about 700 MB


def test_installs_and_runs_the_bundled_wheels_and_core(session):
    assert session["onnxruntime_file"].startswith(session["site_packages"])
    assert session["core_file"].startswith(session["extension_dir"])


def test_device_menu_lists_only_what_can_run_here_and_says_why_not(session):
    """onnxruntime-gpu lists CUDA and TensorRT everywhere; the menu offers them only where they start."""
    probe = session["probe"]
    usable = [name for name, (ok, _reason) in probe.items() if ok]
    assert session["device_items"] == ["auto", *usable] and "cpu" in usable
    if not probe["cuda"][0]:  # this machine has no CUDA libraries: the loader says which one is missing
        assert "cuda" not in session["device_items"]
        assert ".so" in session["accelerator_problems"]["cuda"], session["accelerator_problems"]
        assert f"on CPU (cuda: {probe['cuda'][1]})" in session["after_render_message"]
        # the core's own one-line warning (what the kprcan CLI prints), not onnxruntime's error block
        warning = f"no accelerator could start (cuda: {probe['cuda'][1]}); running on the CPU"
        assert warning in session["output"]
        assert "EP Error" not in session["output"]


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


def test_compositor_says_which_link_it_replaced_and_restores_it(session):
    [[user_node, user_socket]] = session["user_link"]
    assert f"replacing the link from {user_node} > {user_socket}" in session["insert_message"]
    assert session["restore"] == ["FINISHED"]
    assert session["links_after_restore"] == session["user_link"] and session["node_after_restore"] is False


def test_a_later_still_render_composites_its_own_denoised_image(session):
    """The node's image follows each still render: after moving the sphere and rendering again, it holds
    the new render's denoise (its noisy beauty is the new render), not the first one."""
    first = read_exr(session["out"] / "first_node_image.exr").find("ViewLayer", "Noisy Image").hwc
    later = read_exr(session["node_file_after_second_render"]).find("ViewLayer", "Noisy Image").hwc
    assert float(np.abs(first - later).max()) > 0.1, (session["node_file_after_second_render"],
                                                      session["output"][-3000:])
    notes = [text for text, _icon in session["status_with_node"]]
    assert any("holds one still image" in text and "animation frame" in text for text in notes)


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


def test_animation_output_drops_the_noisy_composite_layer_quietly(session):
    """With compositing on, Blender writes a Composite layer (the noisy composite, which viewers open
    first): the denoised frames leave it out, without a warning per frame; the still node is flagged."""
    assert "Composite" in read_exr(session["out"] / "anim" / "frame_0002.exr").layers
    assert read_exr(session["out"] / "anim" / "frame_0002_denoised.exr").layers == ["ViewLayer"]
    assert "lacks passes" not in session["output"]
    assert session["output"].count("KPRCAN: the compositor's KPRCAN Denoised node holds one still") == 1


def test_errors_are_reported_not_swallowed(session):
    assert session["no_render_error"] == "Error: no render to denoise: render an image first (F12)\n"
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


PANEL = r"""
import time
site = extension_site_packages()      # the bundled wheels first, as in a real Blender
sys.path.insert(0, site)
started = time.perf_counter()
bpy.ops.preferences.addon_enable(module=MODULE)
addon = sys.modules[MODULE]
models = [item[0] for item in addon.preferences._models(None, bpy.context)]
devices = [item[0] for item in addon.preferences._devices(None, bpy.context)]
lines = addon.panels.status_lines(bpy.context)
panel_seconds = time.perf_counter() - started

import onnxruntime
sessions = []
class CountingSession(onnxruntime.InferenceSession):
    def __init__(self, *args, **kwargs):
        sessions.append(args[:1])
        super().__init__(*args, **kwargs)
onnxruntime.InferenceSession = CountingSession
sys.modules["denoiser_core"].models._INFO_CACHE.clear()   # list the models again, from the files
addon.preferences._models(None, bpy.context)
addon.panels.status_lines(bpy.context)
emit(panel_seconds=panel_seconds, models=models, devices=devices, lines=lines, sessions=len(sessions),
     onnxruntime=onnxruntime.__file__, site=site)
"""


def test_enabling_and_drawing_the_panel_builds_no_session(session):
    """From enabling the extension to a drawn panel (its model and device menus and status box), in a
    fresh Blender with the GPU zip installed: the models are listed from their files, no onnxruntime
    session is built in Blender's process (sessions live in the worker), the device menu does not wait
    for the device probe. The time is printed for the record (2 shared cores: not asserted)."""
    seen, _output = run_bpy(PANEL, session["user_dir"], timeout=120, python=session["python"])
    assert seen["onnxruntime"].startswith(seen["site"])   # onnxruntime-gpu, the slow one to start
    assert seen["sessions"] == 0
    assert {"DEFAULT", "fast", "quality", "CUSTOM"} <= set(seen["models"])
    assert seen["devices"][:2] == ["auto", "cpu"]
    assert seen["lines"][0][0].startswith("Model: fast")
    print(f"enable to drawn panel: {seen['panel_seconds']:.2f} s")
