"""The datagen CLI end to end on tiny procedural views: sharding, manifest, resume, determinism, packing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.datagen import plan
from training.datagen.exr_io import read_passes
from training.datagen.scene_kinds import make_scene
from training.datagen.scenes import KINDS

REPO = Path(__file__).resolve().parents[1]


def manifest_ids(root: Path) -> list[str]:
    return [record["id"] for record in plan.read_manifest(root)]


@pytest.fixture
def tiny_run(datagen_tiny_run) -> Path:
    return datagen_tiny_run


def test_shards_split_without_overlap(tiny_run):
    per_shard = {path.name: [json.loads(line)["id"] for line in path.read_text().splitlines()]
                 for path in plan.manifest_paths(tiny_run)}
    assert set(per_shard) == {"manifest.shard0of2.jsonl", "manifest.shard1of2.jsonl"}
    ids0, ids1 = per_shard["manifest.shard0of2.jsonl"], per_shard["manifest.shard1of2.jsonl"]
    assert not set(ids0) & set(ids1)
    assert sorted(ids0 + ids1) == ["train-000000", "train-000001", "train-000002"]


def test_manifest_records_every_render(tiny_run):
    for record in plan.read_manifest(tiny_run):
        files = sorted(r["file"] for r in record["renders"])
        assert files == ["reference.exr", "spp2_a.exr", "spp2_b.exr", "spp8_a.exr", "spp8_b.exr"]
        assert all(r["render_seconds"] > 0 for r in record["renders"])
        seeds = [r["seed"] for r in record["renders"]]
        assert len(set(seeds)) == len(seeds)  # halves and reference are independent
        samples = {r["name"]: r["samples"] for r in record["renders"]}
        assert samples == {"spp2_a": 1, "spp2_b": 1, "spp8_a": 4, "spp8_b": 4, "ref": 16}
        view = tiny_run / record["dir"]
        assert json.loads((view / "scene.json").read_text()) == make_scene(record["scene_seed"], (48, 48))
        assert read_passes(str(view / "spp8_a.exr"))["combined"].shape == (48, 48, 4)
        assert not list(view.glob("*.partial*")) and not list(view.glob("*.job.json"))


def test_validation_seeds_never_overlap_training():
    train = plan.plan_items(plan.Settings(split="train", views=5000))
    val = plan.plan_items(plan.Settings(split="val", views=100))
    assert not {i["scene_seed"] for i in train} & {i["scene_seed"] for i in val}


def test_kinds_are_given_in_turn_and_reach_the_scene(tmp_path):
    settings = plan.Settings(split="test", views=4, first=1, kinds=("interior", "caustics"))
    items = plan.plan_items(settings)
    assert [item["kind"] for item in items] == ["caustics", "interior", "caustics", "interior"]
    for item in items:
        scene = plan.build_job(item, tmp_path, threads=1)["scene"]
        assert scene["kind"] == item["kind"]
        assert scene == make_scene(item["scene_seed"], (128, 128), item["kind"])
    # without kinds the seed draws one, as before: the same scene as make_scene(seed)
    item = plan.plan_items(plan.Settings(split="test", views=1))[0]
    assert "kind" not in item
    assert plan.build_job(item, tmp_path, threads=1)["scene"] == make_scene(item["scene_seed"], (128, 128))


def test_kinds_with_user_blends_is_refused(tmp_path, capsys):
    from training.datagen.__main__ import main as datagen_main

    blend = tmp_path / "user.blend"
    blend.write_bytes(b"BLENDER")  # exists; the refusal comes before any render
    out = tmp_path / "out"
    assert datagen_main(["render", "--out", str(out), "--blend", str(blend), "--kinds", "studio"]) == 2
    assert "--kinds" in capsys.readouterr().err
    assert not out.exists()  # refused before the output folder or its log was made


def test_interrupted_run_resumes_without_redoing_work(tiny_run, tmp_path, datagen_cli, tiny_args):
    root = tmp_path / "resume"
    root.mkdir()
    for name in ("renders", "manifest.shard0of2.jsonl"):
        subprocess.run(["cp", "-a", str(tiny_run / name), str(root / name)], check=True)
    # simulate a kill: item 0 finished; item 2 lost one EXR and left a torn manifest line + temp files
    manifest = root / "manifest.shard0of2.jsonl"
    lines = manifest.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["train-000000", "train-000002"]
    manifest.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    item2 = root / "renders" / "train" / "train-000002"
    (item2 / "reference.exr").unlink()
    kept = {p: p.stat().st_mtime_ns for p in (root / "renders").rglob("spp*.exr")}
    (item2 / "tmpdead.job.json").write_text("{}")
    (item2 / "spp8_a.exr.partial.exr").write_bytes(b"half")

    datagen_cli("render", "--out", str(root), "--views", "3", "--shard", "0/2", *tiny_args)
    ids = manifest_ids(root)
    assert sorted(ids) == ["train-000000", "train-000002"]  # torn line ignored, item 2 redone once
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # finished EXRs not re-rendered
    assert (item2 / "reference.exr").exists()
    assert not (item2 / "tmpdead.job.json").exists() and not (item2 / "spp8_a.exr.partial.exr").exists()
    # a second run has nothing left to do
    datagen_cli("render", "--out", str(root), "--views", "3", "--shard", "0/2", *tiny_args)
    assert sorted(manifest_ids(root)) == ["train-000000", "train-000002"]


def test_same_seed_gives_same_scene_and_pixels(tiny_run, tmp_path, datagen_cli, tiny_args):
    assert make_scene(12345) == make_scene(12345)
    assert make_scene(12345) != make_scene(12346)
    # re-render view 1 from scratch in another folder: same scene seed -> same Cycles seeds -> same image
    datagen_cli("render", "--out", str(tmp_path), "--views", "1", "--first", "1", *tiny_args)
    first = read_passes(str(tiny_run / "renders/train/train-000001/spp8_a.exr"))["combined"][..., :3]
    again = read_passes(str(tmp_path / "renders/train/train-000001/spp8_a.exr"))["combined"][..., :3]
    other = read_passes(str(tiny_run / "renders/train/train-000001/spp8_b.exr"))["combined"][..., :3]
    lit = (first.max(-1) > 0) | (other.max(-1) > 0)
    assert lit.mean() > 0.2
    same = np.isclose(first, again, rtol=1e-4, atol=1e-5).all(-1)[lit].mean()
    # Cycles is reproducible up to float rounding in smooth-shaded meshes (which can flip a rare path);
    # an independent seed changes most lit pixels
    assert same > 0.97
    assert np.isclose(first, other, rtol=1e-4, atol=1e-5).all(-1)[lit].mean() < 0.5
    assert np.abs(first - again).mean() < 0.05 * np.abs(first - other).mean()


def test_bad_arguments_fail_cleanly(tmp_path):
    for args in (["--shard", "2/2"], ["--spp", "3"], ["--blend", str(tmp_path / "missing.blend")]):
        proc = subprocess.run([sys.executable, "-m", "training.datagen", "render", "--out", str(tmp_path),
                               *args], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0
        assert "error" in proc.stderr.lower()
    assert not list(tmp_path.glob("manifest*"))


SAVE_BLEND = """
import sys, json
sys.path.insert(0, sys.argv[1])
import bpy, bpy_scene
bpy_scene.build_scene(json.loads(open(sys.argv[2]).read()))
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[3])
"""


def test_user_blend_variations(tmp_path, datagen_cli, small_scene_spec):
    spec_path, blend = tmp_path / "spec.json", tmp_path / "user.blend"
    spec_path.write_text(json.dumps(small_scene_spec))
    subprocess.run([sys.executable, "-c", SAVE_BLEND, str(REPO / "training" / "datagen"), str(spec_path),
                    str(blend)], check=True, capture_output=True, timeout=300)
    out = tmp_path / "out"
    datagen_cli("render", "--out", str(out), "--blend", str(blend), "--views", "2", "--frames", "1",
                "--resolution", "32", "24", "--spp", "2", "--ref-spp", "8")
    records = sorted(plan.read_manifest(out), key=lambda r: r["id"])
    assert [r["kind"] for r in records] == ["blend", "blend"]
    assert records[0]["camera_jitter"] != records[1]["camera_jitter"]
    first, second = (read_passes(str(out / r["dir"] / "reference.exr"))["combined"] for r in records)
    assert first.shape == (24, 32, 4)
    assert np.abs(first - second).mean() > 1e-3  # the camera moved between the variations


def test_cameras_leave_props_and_stay_in_rooms_without_changing_clear_scenes(monkeypatch):
    from training.datagen import scene_kinds

    # these training seeds rendered black before: 21 (camera outside its room), 125, 145, 185 (inside a prop)
    for seed in (21, 125, 145, 185):
        scene = scene_kinds.make_scene(seed)
        assert scene_kinds._camera_ok(scene["camera"]["location"], scene), seed
    fixed = {seed: scene_kinds.make_scene(seed) for seed in range(300)}
    assert sum(scene_kinds._camera_ok(s["camera"]["location"], s) for s in fixed.values()) >= 298
    monkeypatch.setattr(scene_kinds, "_clear_camera", lambda scene: None)
    for seed, scene in fixed.items():  # the fix draws no random numbers: clear scenes stay identical
        before = scene_kinds.make_scene(seed)
        if scene_kinds._camera_ok(before["camera"]["location"], before):
            assert scene == before, seed
        else:  # moved, unless no spot on its line of sight is clear (seed 32: left as it was)
            moved = scene["camera"]["location"] != before["camera"]["location"]
            assert moved or not scene_kinds._camera_ok(scene["camera"]["location"], scene), seed


def test_stress_kinds_come_only_on_request():
    """fog and dof views exist for test sets; random seeds never draw them, so training data is unchanged."""
    assert {make_scene(seed)["kind"] for seed in range(300)} <= set(KINDS)
    fog = make_scene(7, kind="fog")
    densities = [o["material"]["volume"]["density"] for o in fog["objects"] if "volume" in o["material"]]
    assert fog["kind"] == "fog" and densities and min(densities) >= 0.15
    assert make_scene(7, kind="dof")["camera"]["dof"]["fstop"] <= 1.2


@pytest.mark.parametrize("seed", range(40))
def test_glass_glossy_and_motion_kinds_hold_what_they_stress(seed):
    """Stress training views: glass spheres in a box room, a rough-glossy floor under neon, strong motion
    blur. Each spec must hold its stress whatever the seed draws."""
    glass = make_scene(seed, kind="glass")
    spheres = [o for o in glass["objects"] if o["material"].get("transmission") == 1.0]
    assert spheres and all(o["mesh"] == "uv_sphere" for o in spheres)
    assert glass["lights"][0]["type"] == "AREA" and glass["world"]["strength"] == 0.0
    glossy = make_scene(seed, kind="glossy")
    floor = glossy["objects"][0]["material"]
    assert floor["roughness"] <= 0.3 and "metallic" not in floor
    assert sum(o["material"].get("emission_strength", 0) > 0 for o in glossy["objects"]) >= 3
    motion = make_scene(seed, kind="motion")
    assert motion["motion_blur"]["shutter"] >= 0.3  # 0.5-1.0, or 0.3-1.0 where the extras move props too
    assert sum("motion" in o for o in motion["objects"]) >= 2
