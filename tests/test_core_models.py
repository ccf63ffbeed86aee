"""Model discovery, contract metadata validation and device selection, on real ONNX files."""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort
import pytest
from onnx_models import save_model

from denoiser_core import DenoiserError, ModelInfo, available_devices, list_models, load_model
from denoiser_core.devices import providers_for
from denoiser_core.models import MODEL_PATH_ENV, model_dirs, read_model_info

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    folder = tmp_path / "user_models"
    save_model(folder, "guided", name="fast")
    save_model(folder, "pooled", name="test-quality", filename="kprcan_test_quality.onnx")
    monkeypatch.setenv(MODEL_PATH_ENV, f"{tmp_path / 'nowhere'}:{folder}")
    return folder


def test_metadata_is_read_into_model_info(tmp_path):
    info = read_model_info(save_model(tmp_path, "pooled", name="pooled8"))
    assert isinstance(info, ModelInfo)
    assert (info.name, info.architecture) == ("pooled8", "test-filter")
    assert (info.receptive_radius, info.size_multiple) == (3, 8)
    assert info.needs_variance is False and info.parameters == 0
    assert "denoising_albedo" in info.required_passes and info.path == (tmp_path / "pooled8.onnx").resolve()
    assert info.metadata["kprcan.format_version"] == "1"
    assert read_model_info(save_model(tmp_path, "variance")).needs_variance is True


def test_list_models_finds_env_folders_and_resolves_names(user_models):
    assert user_models in model_dirs()
    found = {m.name: m for m in list_models()}
    assert {"fast", "test-quality"} <= set(found)
    assert load_model("test-quality").info.path.name == "kprcan_test_quality.onnx"
    assert load_model("kprcan_test_quality").info.name == "test-quality"  # the file stem works too
    with pytest.raises(DenoiserError, match="'nonexistent' not found"):
        load_model("nonexistent")


def test_default_model_is_fast_when_no_bundled_model_shadows_it(user_models):
    names = [m.name for m in list_models()]
    expected = "fast" if "fast" in names else names[0]
    assert load_model(None).info.name == expected


def test_unusable_model_files_are_skipped_in_listings(user_models, caplog):
    (user_models / "garbage.onnx").write_bytes(b"\x00\x01 definitely not protobuf")
    with caplog.at_level(logging.WARNING, logger="kprcan"):
        names = [m.name for m in list_models()]
    assert "fast" in names and "garbage" not in names
    assert "garbage.onnx" in caplog.text


@pytest.mark.parametrize("overrides, message", [
    ({"format_version": None}, "lacks kprcan.format_version"),
    ({"required_passes": None, "size_multiple": None}, "lacks kprcan.required_passes, kprcan.size_multiple"),
    ({"format_version": "7"}, "format version 7.*update kprcan"),
    ({"format_version": "0"}, "format version 0"),
    ({"receptive_radius": "forty"}, "receptive_radius must be an integer"),
    ({"required_passes": '["combined", "shiny"]'}, "unknown names.*shiny"),
    ({"inputs": "diffuse"}, "inputs must be a JSON list"),
    ({"inputs": '["diffuse", "specular"]'}, "graph inputs"),
    ({"needs_variance": "maybe"}, "needs_variance must be true or false"),
    ({"denoise_residual": "yes", "format_version": "2"}, "denoise_residual must be true or false"),
    ({"denoise_residual": "true"}, "denoise_residual needs format_version 2"),
])
def test_bad_metadata_is_rejected_with_the_reason(tmp_path, overrides, message):
    path = save_model(tmp_path, "guided", name="bad", **overrides)
    with pytest.raises(DenoiserError, match=message) as caught:
        load_model(str(path))
    assert caught.value.exit_code == 2 and str(path.name) in str(caught.value)


def test_not_an_onnx_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"ONNX? no." * 50)
    with pytest.raises(DenoiserError, match="not a valid ONNX model"):
        load_model(str(path))
    with pytest.raises(DenoiserError, match="model file not found"):
        load_model(str(tmp_path / "absent.onnx"))


def test_devices_and_cpu_fallback(tmp_path, caplog):
    assert "cpu" in available_devices()
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    assert providers_for("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(DenoiserError, match="unknown device"):
        providers_for("tpu")
    accelerators = ("cuda", "directml", "coreml", "tensorrt")
    missing = next((d for d in accelerators if d not in available_devices()), None)
    if missing is None:
        pytest.skip("every accelerator provider is available here")
    with caplog.at_level(logging.WARNING, logger="kprcan"):
        denoiser = load_model(str(save_model(tmp_path, "guided")), device=missing)
    assert denoiser.providers == ["CPUExecutionProvider"]
    assert f"device '{missing}' cannot run here" in caplog.text
    assert set(ort.get_available_providers()) >= set(denoiser.providers)


def test_provider_that_fails_to_start_falls_back_to_cpu(tmp_path):
    """A provider whose creation fails (here one onnxruntime does not know) still yields a CPU session."""
    from denoiser_core.models import open_session

    providers = ["NoSuchExecutionProvider", "CPUExecutionProvider"]
    session = open_session(save_model(tmp_path, "guided"), providers)
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_cpu_sessions_return_memory_after_each_run(tmp_path):
    """The CPU arena would keep a frame's peak resident for the session's life (2 GiB after a 1080p frame,
    measured): inside Blender, which keeps the model loaded, that memory would never come back."""
    denoiser = load_model(str(save_model(tmp_path, "guided")), device="cpu")
    assert denoiser._session.get_session_options().enable_cpu_mem_arena is False


def test_metadata_is_read_without_an_onnxruntime_session(tmp_path, monkeypatch):
    """Listing models must not build sessions (with onnxruntime-gpu 0.95 s for fast, 6.9 s for quality):
    the metadata comes from the file's protobuf, and agrees with what onnxruntime itself reports."""
    from denoiser_core.models import read_onnx_metadata

    shipped = sorted(MODELS.glob("*.onnx"))
    assert shipped
    expected = {path: dict(ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map)
                for path in shipped}

    def no_sessions(*args, **kwargs):
        raise AssertionError("an onnxruntime session was built to read metadata")

    monkeypatch.setattr(ort, "InferenceSession", no_sessions)
    for path in shipped:
        assert read_onnx_metadata(path) == expected[path]
        assert read_model_info(path).name == path.stem
    assert {m.path for m in list_models()} >= {p.resolve() for p in shipped}


def test_truncated_model_is_not_a_valid_onnx_model(tmp_path):
    path = tmp_path / "cut.onnx"
    whole = save_model(tmp_path, "guided").read_bytes()
    path.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(DenoiserError, match="not a valid ONNX model"):
        read_model_info(path)


def test_device_probe_names_what_can_run_and_why_not():
    """Every device name gets a verdict; the CPU always runs; a device that cannot run says why."""
    from denoiser_core.devices import DEVICE_NAMES, fallback_reason, probe_devices, usable_devices

    statuses = probe_devices()
    assert set(statuses) == set(DEVICE_NAMES) - {"auto"}
    assert statuses["cpu"].usable and "cpu" in usable_devices()
    for name, status in statuses.items():
        assert status.usable == (status.reason == ""), status
        if not status.usable:
            assert fallback_reason(name) == f"{name}: {status.reason}"
            assert providers_for(name) == ["CPUExecutionProvider"]
    assert probe_devices() == statuses  # probed once: the same answer without starting anything again
