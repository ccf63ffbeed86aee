"""EXR reading and writing on real files written with OpenEXR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import OpenEXR
import pytest
from exr_fixtures import ALL_RENDER_PASSES, read_channels, synthetic_passes, write_blender_exr

from denoiser_core import DenoiserError, read_exr, write_exr
from denoiser_core.exr import split_channel_name

REFERENCE_CHANNELS = Path("/work/shared/reference/cycles-4.5-multilayer-channels.txt")
EXPECTED_45_CHANNELS = {  # from a real bpy 4.5.4 render with every pass on (see REFERENCE_CHANNELS)
    f"ViewLayer.{p}.{c}"
    for p, cs in {"Combined": "RGBA", "Denoising Albedo": "RGB", "Denoising Depth": "Z",
                  "Denoising Normal": "XYZ", "Depth": "Z", "Normal": "XYZ"}.items() for c in cs
} | {f"ViewLayer.{p}.{c}" for p in ("DiffCol", "DiffDir", "DiffInd", "Emit", "Env", "GlossCol", "GlossDir",
                                    "GlossInd", "TransCol", "TransDir", "TransInd", "VolumeDir", "VolumeInd")
     for c in "RGB"}


def test_fixture_names_channels_like_blender_45(tmp_path):
    path = write_blender_exr(tmp_path / "render.exr")
    assert set(read_channels(path)) == EXPECTED_45_CHANNELS
    if REFERENCE_CHANNELS.exists():  # the lead's record of a real render, when present
        lines = REFERENCE_CHANNELS.read_text().splitlines()
        listed = {line.rsplit(" ", 1)[0] for line in lines if line.startswith("ViewLayer.")}
        assert listed == EXPECTED_45_CHANNELS


@pytest.mark.parametrize("channel, expected", [
    ("ViewLayer.DiffDir.R", ("ViewLayer", "DiffDir", "R")),
    ("Second.001.Denoising Normal.X", ("Second.001", "Denoising Normal", "X")),
    ("Combined.A", ("", "Combined", "A")),
    ("Z", ("", "", "Z")),
])
def test_split_channel_name(channel, expected):
    assert split_channel_name(channel) == expected


def test_read_groups_passes_in_component_order(tmp_path):
    passes = synthetic_passes(20, 30)
    image = read_exr(write_blender_exr(tmp_path / "r.exr", passes))
    assert image.layers == ["ViewLayer"]
    layer = image.layer_passes("ViewLayer")
    assert layer["Combined"].components == ["R", "G", "B", "A"]
    assert layer["Denoising Normal"].components == ["X", "Y", "Z"]
    assert layer["Depth"].components == ["Z"]
    canonical = image.canonical_passes("ViewLayer")
    assert set(canonical) == set(ALL_RENDER_PASSES)
    for name, array in passes.items():
        assert canonical[name].shape == (20, 30, array.shape[-1])
        np.testing.assert_array_equal(canonical[name], array)


def test_blender_5_names_map_to_the_same_canonical_passes(tmp_path):
    passes = synthetic_passes(8, 8)
    image = read_exr(write_blender_exr(tmp_path / "r5.exr", passes, blender_major=5))
    assert "Diffuse Direct" in image.layer_passes("ViewLayer")
    assert set(image.canonical_passes("ViewLayer")) == set(ALL_RENDER_PASSES)


def test_several_view_layers_with_dotted_names(tmp_path):
    image = read_exr(write_blender_exr(tmp_path / "r.exr", synthetic_passes(8, 8),
                                       layers=("ViewLayer", "Layer.001")))
    assert sorted(image.layers) == ["Layer.001", "ViewLayer"]
    assert set(image.canonical_passes("Layer.001")) == set(ALL_RENDER_PASSES)


@pytest.mark.parametrize("compression, half", [
    (OpenEXR.ZIP_COMPRESSION, False), (OpenEXR.PIZ_COMPRESSION, True),
    (OpenEXR.NO_COMPRESSION, False), (OpenEXR.DWAA_COMPRESSION, True),
])
def test_roundtrip_keeps_channels_values_compression_and_header(tmp_path, compression, half):
    lossy = compression == OpenEXR.DWAA_COMPRESSION  # re-encoding with a lossy codec loses a little again
    source = write_blender_exr(tmp_path / "in.exr", synthetic_passes(16, 24), half=half,
                               compression=compression,
                               extra={"ViewLayer.IndexOB.X": np.arange(384, dtype=np.uint32).reshape(16, 24)})
    image = read_exr(source)
    assert {p.stored_as for p in image.passes} == ({"half", "uint"} if half else {"float", "uint"})
    out = write_exr(image, tmp_path / "out.exr")
    before, after = read_channels(source), read_channels(out)
    assert set(after) == set(before)
    for name, plane in before.items():
        np.testing.assert_allclose(after[name].astype(np.float64), plane.astype(np.float64),
                                   rtol=0.05 if lossy else 0, atol=0.02 if lossy else 0, err_msg=name)
        expected_dtype = np.uint32 if plane.dtype == np.uint32 else np.float32
        assert after[name].dtype == expected_dtype
    header = OpenEXR.File(str(out), header_only=True).header()
    assert header["compression"] == compression
    assert header["Camera"] == "Camera" and header["cycles.ViewLayer.samples"] == "16"
    assert not list(tmp_path.glob("*.tmp"))


def test_write_half_on_request(tmp_path):
    image = read_exr(write_blender_exr(tmp_path / "in.exr", synthetic_passes(8, 8)))
    out = write_exr(image, tmp_path / "out.exr", half=True)
    assert {p.dtype for p in read_channels(out).values()} == {np.dtype(np.float16)}


def test_multipart_file_with_different_data_windows(tmp_path):
    box = (np.array([0, 0], np.int32), np.array([15, 7], np.int32))
    small = (np.array([0, 0], np.int32), np.array([15, 3], np.int32))
    parts = [OpenEXR.Part({"compression": OpenEXR.ZIP_COMPRESSION, "displayWindow": box, "dataWindow": box},
                          {"ViewLayer.Combined.R": np.ones((8, 16), np.float32)}, "beauty"),
             OpenEXR.Part({"compression": OpenEXR.PIZ_COMPRESSION, "displayWindow": box, "dataWindow": small},
                          {"ViewLayer.DiffDir.R": np.ones((4, 16), np.float32)}, "diffuse")]
    OpenEXR.File(parts).write(str(tmp_path / "mp.exr"))
    image = read_exr(tmp_path / "mp.exr")
    assert [p.name for p in image.parts] == ["beauty", "diffuse"]
    assert image.find("ViewLayer", "DiffDir").size == (16, 4)
    out = write_exr(image, tmp_path / "out.exr")
    written = OpenEXR.File(str(out), separate_channels=True)
    assert [p.name() for p in written.parts] == ["beauty", "diffuse"]
    assert written.parts[1].compression() == OpenEXR.PIZ_COMPRESSION


def test_missing_garbage_and_truncated_files_raise_clear_errors(tmp_path):
    with pytest.raises(DenoiserError, match="no such file"):
        read_exr(tmp_path / "absent.exr")
    (tmp_path / "text.exr").write_text("not an image at all")
    with pytest.raises(DenoiserError, match="not an OpenEXR file"):
        read_exr(tmp_path / "text.exr")
    good = write_blender_exr(tmp_path / "good.exr", synthetic_passes(64, 64))
    data = good.read_bytes()
    for cut, name in ((len(data) // 2, "half.exr"), (200, "header.exr")):
        (tmp_path / name).write_bytes(data[:cut])
        with pytest.raises(DenoiserError, match="corrupt") as caught:
            read_exr(tmp_path / name)
        assert "\n" not in str(caught.value)


def test_half_output_clamps_to_the_half_range_instead_of_writing_inf(tmp_path):
    passes = synthetic_passes(8, 8)
    passes["depth"][:4] = 1e10  # what Cycles writes for background pixels in the Depth pass
    passes["combined"][0, 0, :3] = [2e5, -7e4, 1.5]  # a sun disc can exceed half's 65504
    out = write_exr(read_exr(write_blender_exr(tmp_path / "in.exr", passes)), tmp_path / "out.exr", half=True)
    after = read_channels(out)
    assert all(np.isfinite(plane).all() for plane in after.values())
    assert (after["ViewLayer.Depth.Z"][:4] == 65504).all()
    assert after["ViewLayer.Combined.R"][0, 0] == 65504 and after["ViewLayer.Combined.G"][0, 0] == -65504
    assert after["ViewLayer.Combined.B"][0, 0] == 1.5


def test_write_errors_name_the_output_not_the_temp_file_and_leave_nothing(tmp_path):
    image = read_exr(write_blender_exr(tmp_path / "in.exr", synthetic_passes(8, 8)))
    image.parts[0].header["bogus"] = object()  # an attribute OpenEXR cannot store
    with pytest.raises(DenoiserError, match=r"^\S*out\.exr: cannot write EXR \(.*bogus") as caught:
        write_exr(image, tmp_path / "out.exr")
    assert ".tmp" not in str(caught.value) and caught.value.exit_code == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.exr"]


def test_a_pass_in_a_part_the_image_lacks_is_an_error_not_silently_dropped(tmp_path):
    image = read_exr(write_blender_exr(tmp_path / "in.exr", synthetic_passes(8, 8)))
    image.set_pass("ViewLayer", "Extra", "RGB", np.ones((8, 8, 3), np.float32), part=1)
    with pytest.raises(DenoiserError, match="pass 'ViewLayer.Extra' is in part 1, but the image has 1 part"):
        write_exr(image, tmp_path / "out.exr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.exr"]


def test_exr_io_compresses_on_every_core(tmp_path):
    """OpenEXR's bindings default to one thread; ZIP-compressing a 4K multilayer frame then took ~20 s."""
    from denoiser_core.devices import usable_cores
    from denoiser_core.exr import ExrImage, ExrPass

    OpenEXR.set_global_thread_count(0)
    image = ExrImage([ExrPass("", "", ["R", "G", "B"], np.ones((3, 4, 4), np.float32))])
    write_exr(image, tmp_path / "a.exr")
    assert OpenEXR.global_thread_count() == usable_cores()
