"""training/evaluate.py end to end on real Cycles renders, a real ONNX model and Intel OIDN."""

from __future__ import annotations

import csv
import shutil

import pytest
from onnx_models import save_model

from training import evaluate

pytestmark = pytest.mark.slow  # the fixtures render with bpy on first use (then cached)


def test_evaluate_scores_noisy_oidn_and_a_model(cycles_exr, cycles_reference_exr, tmp_path):
    view = tmp_path / "data" / "view-a"
    view.mkdir(parents=True)
    shutil.copy(cycles_reference_exr, view / "reference.exr")
    # the two "halves" of a 32 spp input: evaluate averages them (here the same 16 spp render twice)
    shutil.copy(cycles_exr, view / "spp32_a.exr")
    shutil.copy(cycles_exr, view / "spp32_b.exr")
    model = save_model(tmp_path / "models", "guided", name="test-guided")

    code = evaluate.main(["--data", str(tmp_path / "data"), "--models", str(model),
                          "--out", str(tmp_path / "eval"), "--crop-spp", "32"])

    assert code == 0
    with open(tmp_path / "eval" / "results.csv") as f:
        rows = {row["method"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"noisy", "oidn", "test-guided"}
    assert all(row["spp"] == "32" and row["view"] == "view-a" for row in rows.values())
    psnr = {method: float(row["psnr"]) for method, row in rows.items()}
    relmse = {method: float(row["relmse"]) for method, row in rows.items()}
    # OIDN beats the 16 spp input against the 512 spp reference in every metric's direction; the stand-in
    # filter model is scored like any model (trained models are held to this in test_bundled_models.py)
    assert psnr["oidn"] > psnr["noisy"] + 1.0, psnr
    assert relmse["oidn"] < relmse["noisy"], relmse
    assert float(rows["oidn"]["flip"]) < float(rows["noisy"]["flip"])
    assert float(rows["oidn"]["ssim"]) > float(rows["noisy"]["ssim"])
    assert psnr["test-guided"] != psnr["noisy"] and 0 < float(rows["test-guided"]["ssim"]) <= 1
    table = (tmp_path / "eval" / "results.md").read_text()
    assert "| 32 | oidn |" in table and "view-a" in table
    view_row = next(line for line in table.splitlines() if line.startswith("| view-a | 32 |"))
    assert len(view_row.split("|")) == 2 + 2 + 3 + 2  # view, spp, 3 methods, reference noise, fireflies
    # per scene kind (this view has no scene.json: kind "?"), with the model's difference to OIDN
    kind_row = next(line for line in table.splitlines() if line.startswith("| ? | 32 | 1 |"))
    cells = [c.strip() for c in kind_row.split("|")[4:-1]]
    assert float(cells[3]) == pytest.approx(psnr["test-guided"] - psnr["oidn"], abs=0.011)
    assert (tmp_path / "eval" / "crops.png").read_bytes().startswith(b"\x89PNG")


def test_models_with_the_same_name_get_columns_named_after_their_files(cycles_exr, cycles_reference_exr,
                                                                        tmp_path):
    view = tmp_path / "data" / "view-a"
    view.mkdir(parents=True)
    shutil.copy(cycles_reference_exr, view / "reference.exr")
    shutil.copy(cycles_exr, view / "spp16.exr")
    model = save_model(tmp_path / "models", "guided", name="fast")
    older = tmp_path / "older" / "fast_v1.onnx"  # e.g. the previous release, same metadata name
    older.parent.mkdir()
    shutil.copy(model, older)

    code = evaluate.main(["--data", str(tmp_path / "data"), "--models", str(model), str(older),
                          "--no-oidn", "--out", str(tmp_path / "eval")])

    assert code == 0
    with open(tmp_path / "eval" / "results.csv") as f:
        methods = {row["method"] for row in csv.DictReader(f)}
    assert methods == {"noisy", "fast", "fast_v1"}


def test_error_budget_swaps_one_term_for_the_reference(cycles_exr, cycles_reference_exr, tmp_path, capsys):
    view = tmp_path / "data" / "view-a"
    view.mkdir(parents=True)
    shutil.copy(cycles_reference_exr, view / "reference.exr")
    shutil.copy(cycles_exr, view / "spp16.exr")
    model = save_model(tmp_path / "models", "guided", name="test-guided")

    assert evaluate.main(["--data", str(tmp_path / "data"), "--models", str(model), "--spp", "16",
                          "--error-budget", "--out", str(tmp_path / "eval")]) == 0
    assert not (tmp_path / "eval").exists()  # the mode prints, it writes no results
    header, _rule, row, _mean = capsys.readouterr().out.strip().splitlines()[-4:]
    values = dict(zip(header.strip("| ").split(" | ")[2:], map(float, row.strip("| ").split(" | ")[2:]),
                      strict=True))
    # the model's column is exactly what evaluate.py scores for the same model and view
    rows, _crops, _checks = evaluate.evaluate(tmp_path / "data", [str(model)], [16], False, 16, "cpu")
    scored = {r["method"]: r["psnr"] for r in rows}
    assert values["noisy"] == pytest.approx(scored["noisy"], abs=0.01)
    assert values["model"] == pytest.approx(scored["test-guided"], abs=0.01)
    # the stand-in filter is no denoiser (it scores below the input); the reference's version of either
    # term it filters is better, and its specular (here highlights it blurs away) much better
    assert values["model"] < values["ref diffuse"] and values["model"] + 3 < values["ref specular"]
