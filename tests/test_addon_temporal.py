"""The extension's Denoise Animation Frames in temporal mode, in pip bpy 4.5 with real Cycles renders.

One bpy subprocess (module fixture) enables the add-on from this checkout, renders a 3-frame animation
(48x32, 4 spp, a sphere moving over a floor, compositing on) with the Vector pass, renders frame 3 again
with another seed, then renders with Motion Blur on. The tests compare the frames it wrote with
``denoiser_core`` run here on the same noisy frames: per frame (``denoise_file``) and as one shot
(``denoise_shot``, what ``kprcan denoise --temporal`` runs).
"""

from __future__ import annotations

import numpy as np
import pytest
from addon_harness import REPO, run_bpy
from exr_fixtures import read_channels
from onnx_models import save_model

from denoiser_core import denoise_file, load_model, read_exr
from denoiser_core.shot import denoise_shot

pytestmark = pytest.mark.slow

SESSION = r"""
import shutil
from pathlib import Path
import bpy

out = Path(OUT)
seen = {}
try:
    addon = sys.modules[install_checkout(ADDON)]
    prefs = preferences()
    prefs.model, prefs.model_path, prefs.device = "CUSTOM", MODEL, "cpu"
    build_scene(samples=4, frames=3)
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = 48, 32
    tree = addon.compat.compositor_tree(scene, create=True)   # compositing on: frames get a Composite layer
    layers_node = next((n for n in tree.nodes if n.bl_idname == "CompositorNodeRLayers"), None) \
        or tree.nodes.new("CompositorNodeRLayers")
    tree.links.new(layers_node.outputs["Image"], addon.compat.compositor_output_socket(tree))
    scene.kprcan.enabled = scene.kprcan.denoise_animation = True
    seen["temporal_default"] = scene.kprcan.temporal
    seen["vector_before"] = scene.view_layers[0].use_pass_vector
    seen["status_before"] = addon.panels.status_lines(bpy.context)
    seen["configure"] = list(bpy.ops.kprcan.configure_passes())
    seen["vector_after"] = scene.view_layers[0].use_pass_vector
    seen["status_after"] = addon.panels.status_lines(bpy.context)
    info = addon.render_setup.model_info(MODEL)

    scene.render.filepath = str(out / "anim" / "frame_")
    bpy.ops.render.render(animation=True)
    seen["files"] = sorted(p.name for p in (out / "anim").iterdir())
    seen["message"] = addon.runner.last_message
    shutil.copy(out / "anim" / "frame_0003_denoised.exr", out / "first_0003_denoised.exr")

    scene.cycles.seed = 5                  # frame 3 rendered again, differently: its denoised file is redone
    scene.frame_start = 3
    bpy.ops.render.render(animation=True)
    seen["files_again"] = sorted(p.name for p in (out / "anim").iterdir())
    seen["message_again"] = addon.runner.last_message
    scene.frame_start = 1

    scene.render.use_motion_blur = True
    seen["status_blur"] = addon.panels.status_lines(bpy.context)
    seen["configure_blur"] = addon.render_setup.configure_passes(scene, info, True, True).summary()
    scene.frame_end = 2
    scene.render.filepath = str(out / "blur" / "frame_")
    bpy.ops.render.render(animation=True)
    seen["blur_files"] = sorted(p.name for p in (out / "blur").iterdir())
finally:
    disable()
emit(**seen)
"""


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("temporal")
    model = save_model(root / "models", "guided")
    out = root / "out"
    out.mkdir()
    script = (f"ADDON = {str(REPO / 'blender_addon')!r}\nMODEL = {str(model)!r}\nOUT = {str(out)!r}\n"
              + SESSION)
    seen, output = run_bpy(script, root / "user", timeout=240)
    seen.update(out=out, model=model, output=output)
    return seen


@pytest.fixture(scope="module")
def denoiser(session):
    return load_model(session["model"], "cpu")


def _texts(lines):
    return [text for text, _icon in lines]


def test_temporal_is_on_by_default_and_configure_passes_turns_on_the_vector_pass(session):
    assert session["temporal_default"] is True
    assert session["vector_before"] is False
    assert "Temporal mode is unavailable: ViewLayer renders no Vector pass (Configure Passes turns it on); " \
           "each frame is denoised on its own" in _texts(session["status_before"])
    assert session["configure"] == ["FINISHED"]
    assert session["vector_after"] is True
    report = [line for line in session["output"].splitlines() if "KPRCAN (guided):" in line]
    assert len(report) == 1 and "keep Motion Blur off (Cycles writes no motion vectors with Motion Blur on)" \
        in report[0], report
    assert any(text.startswith("Temporal mode: frames are denoised in order when the render ends")
               for text in _texts(session["status_after"]))


def test_animation_frames_are_denoised_as_one_shot(session, denoiser, tmp_path):
    """Frames 1 and 2 from the first render, frame 3 from the second (rendered again with another seed):
    each as ``denoise_shot`` writes it from the noisy frames as they are now, so frame 3 continued frame
    2's history from its file; the first frame is the per-frame result."""
    anim = session["out"] / "anim"
    names = [f"frame_000{n}{suffix}" for n in (1, 2, 3) for suffix in (".exr", "_denoised.exr")]
    assert session["files"] == session["files_again"] == names  # no claim or temp file left
    assert session["message"] == "Denoising 3 frame(s) in temporal mode: done on CPU"
    assert session["message_again"] == "Denoising 1 frame(s) in temporal mode: done on CPU"
    frames = [(n, anim / f"frame_000{n}.exr", tmp_path / f"shot_000{n}.exr") for n in (1, 2, 3)]
    assert denoise_shot(frames, denoiser) == 3
    for number, _source, expected in frames:
        written = read_exr(anim / f"frame_000{number}_denoised.exr")
        assert written.layers == ["ViewLayer"]  # the noisy Composite layer left out
        mine = {k: v for k, v in read_channels(expected).items() if k.startswith("ViewLayer.")}
        theirs = read_channels(anim / f"frame_000{number}_denoised.exr")
        assert set(theirs) == set(mine) and "ViewLayer.Temporal History.N" in theirs
        for name, pixels in mine.items():
            np.testing.assert_array_equal(theirs[name], pixels, err_msg=f"frame {number} {name}")
    assert read_channels(anim / "frame_0003_denoised.exr")["ViewLayer.Temporal History.N"].max() == 3.0
    first_render = read_channels(session["out"] / "first_0003_denoised.exr")["ViewLayer.Combined.R"]
    assert np.abs(first_render - read_channels(frames[2][2])["ViewLayer.Combined.R"]).max() > 0

    per_frame = denoise_file(anim / "frame_0001.exr", tmp_path / "single.exr", model=denoiser)
    first = read_channels(anim / "frame_0001_denoised.exr")
    for channel in "RGBA":
        name = f"ViewLayer.Combined.{channel}"
        np.testing.assert_array_equal(first[name], read_channels(per_frame)[name])
    assert "lacks passes" not in session["output"]


def test_with_motion_blur_frames_are_denoised_one_by_one_and_the_panel_says_why(session):
    why = ("Temporal mode is unavailable: Motion Blur is on (Render Properties > Motion Blur), and Cycles "
           "writes no motion vectors with it; each frame is denoised on its own")
    assert why in _texts(session["status_blur"])
    assert why in session["configure_blur"]
    assert session["output"].count(f"KPRCAN: {why}") == 1  # one line for the whole render
    assert session["blur_files"] == ["frame_0001.exr", "frame_0001_denoised.exr", "frame_0002.exr",
                                     "frame_0002_denoised.exr"]
    for number in (1, 2):
        names = {p.name for p in read_exr(session["out"] / "blur" / f"frame_000{number}_denoised.exr").passes}
        assert "Combined" in names and "Temporal History" not in names
