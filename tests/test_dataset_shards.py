"""Packing rendered views into fp16 shards and loading training batches from them (real renders)."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import OpenEXR
import pytest
import torch

from denoiser_core.passes import decompose
from training.data import ShardDataset, transform_sample
from training.datagen import pack, plan
from training.datagen.exr_io import read_passes

CONTRACT_KEYS = {"diffuse": 3, "specular": 3, "albedo": 3, "normal": 3, "depth": 1, "diffuse_variance": 1,
                 "specular_variance": 1, "diffuse_reference": 3, "specular_reference": 3, "diffuse_color": 3,
                 "diffuse_color_reference": 3}


@pytest.fixture(scope="module")
def packed(datagen_tiny_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("packed")
    for name in ("renders", *[p.name for p in plan.manifest_paths(datagen_tiny_run)]):
        src = datagen_tiny_run / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    stats = pack.pack_split(root, "train", patch=32, max_firefly_fraction=1.0)
    return root, stats


def test_pack_writes_fp16_shards_and_is_incremental(packed):
    root, stats = packed
    folder = root / "packed" / "train-p32"
    index = json.loads((folder / "index.json").read_text())
    assert stats["views"] == 3 and stats["patches"] == sum(s["count"] for s in index["shards"]) > 0
    shard = np.load(folder / index["shards"][0]["file"], mmap_mode="r")
    assert shard.dtype == np.float16 and shard.shape[1:] == (27, 32, 32)
    assert sorted(index["packed_views"]) == ["train-000000", "train-000001", "train-000002"]
    again = pack.pack_split(root, "train", patch=32, max_firefly_fraction=1.0)
    assert again["views"] == 0 and again["patches"] == 0


def test_batches_follow_the_contract(packed):
    root, _stats = packed
    dataset = ShardDataset(root / "packed", patch_size=24, augment=True, seed=3)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True, num_workers=2)
    batch = next(iter(loader))
    assert set(batch) == set(CONTRACT_KEYS)
    for name, channels in CONTRACT_KEYS.items():
        assert batch[name].shape == (4, channels, 24, 24) and batch[name].dtype == torch.float32
        assert torch.isfinite(batch[name]).all()
    assert (batch["diffuse_variance"] >= 0).all() and (batch["specular_variance"] >= 0).all()
    assert ShardDataset(root / "packed", spp=[8]).__len__() < len(dataset)


def test_patch_values_match_the_exr_decomposition(packed):
    root, _stats = packed
    dataset = ShardDataset(root / "packed", patch_size=None, augment=False)
    meta = dataset.meta(0)
    sample = dataset[0]
    view = root / "renders" / "train" / meta["view"]
    a = read_passes(str(view / f"spp{meta['spp']}_a.exr"))
    b = read_passes(str(view / f"spp{meta['spp']}_b.exr"))
    parts = decompose({k: (a[k] + b[k]) / 2 for k in a})
    window = (slice(meta["y"], meta["y"] + 32), slice(meta["x"], meta["x"] + 32))
    expected = parts.diffuse[window].transpose(2, 0, 1) * meta["scale"]
    np.testing.assert_allclose(sample["diffuse"].numpy(), expected, rtol=2e-3, atol=1e-3 * meta["scale"])
    np.testing.assert_allclose(sample["normal"].numpy(), parts.normal[window].transpose(2, 0, 1), atol=2e-3)
    colour = parts.diffuse_color[window].transpose(2, 0, 1)
    np.testing.assert_allclose(sample["diffuse_color"].numpy(), colour, atol=2e-3)
    # the reference's own colour, not the noisy render's (colour-denoising models are held to it)
    reference_colour = decompose(read_passes(str(view / "reference.exr"))).diffuse_color[window]
    np.testing.assert_allclose(sample["diffuse_color_reference"].numpy(), reference_colour.transpose(2, 0, 1),
                               atol=2e-3)
    half_diff = decompose(a).specular - decompose(b).specular
    expected_var = np.mean((half_diff / 2) ** 2, -1)[window] * meta["scale"] ** 2
    np.testing.assert_allclose(sample["specular_variance"][0].numpy(), expected_var, rtol=5e-3,
                               atol=1e-3 * float(expected_var.max()) + 1e-8)


def test_variance_estimate_shrinks_with_samples(packed):
    root, _stats = packed
    means = {}
    for spp in (2, 8):
        dataset = ShardDataset(root / "packed", patch_size=None, augment=False, spp=[spp])
        means[spp] = np.mean([float(dataset[i]["diffuse_variance"].mean()) for i in range(len(dataset))])
    assert means[2] > 2 * means[8]  # ~4x in expectation


def test_augmentation_keeps_camera_space_normals_consistent(cycles_sphere_exr):
    """On a lit sphere, normal x grows to the right and normal y grows upwards, in every orientation."""
    parts = decompose(read_passes(str(cycles_sphere_exr)))
    arrays = {"normal": parts.normal.transpose(2, 0, 1), "depth": parts.depth.transpose(2, 0, 1),
              "albedo": parts.albedo.transpose(2, 0, 1)}
    for flip_x in (False, True):
        for flip_y in (False, True):
            for transpose in (False, True):
                out = transform_sample(arrays, flip_x, flip_y, transpose, (2, 0, 1))
                normal, mask = out["normal"], out["depth"][0] > 0
                rows, cols = np.nonzero(mask)
                assert np.corrcoef(normal[0][mask], cols)[0, 1] > 0.8
                assert np.corrcoef(normal[1][mask], -rows)[0, 1] > 0.8
                # colours are only permuted (2, 0, 1), never changed: per-channel sums survive the move
                for c, source in enumerate((2, 0, 1)):
                    np.testing.assert_allclose(out["albedo"][c].sum(), arrays["albedo"][source].sum(),
                                               rtol=1e-6)
    permuted = transform_sample(arrays, False, False, False, (2, 0, 1))
    np.testing.assert_array_equal(permuted["albedo"], arrays["albedo"][[2, 0, 1]])
    np.testing.assert_array_equal(permuted["normal"], arrays["normal"])


def one_view_copy(root, work):
    """A data folder holding a copy of the first rendered view of ``root`` and its manifest line."""
    record = plan.read_manifest(root)[0]
    shutil.copytree(root / record["dir"], work / record["dir"])
    (work / "manifest.jsonl").write_text(json.dumps(record) + "\n")
    return record


def test_non_finite_patches_are_dropped_and_counted(packed, tmp_path):
    root, _stats = packed
    work = tmp_path / "nonfinite"
    record = one_view_copy(root, work)
    # poison one pixel of one half-sample render with +Inf (as a broken shader can)
    path = work / record["dir"] / "spp8_a.exr"
    with OpenEXR.File(str(path), separate_channels=True) as exr:
        header = dict(exr.parts[0].header)
        channels = {name: np.array(ch.pixels) for name, ch in exr.parts[0].channels.items()}
    channels["ViewLayer.DiffInd.R"][20, 20] = np.inf
    OpenEXR.File(header, channels).write(str(path))
    stats = pack.pack_split(work, "train", patch=16, max_firefly_fraction=1.0, seed=1)
    assert stats["dropped_nonfinite"] >= 1
    dataset = ShardDataset(work / "packed", patch_size=None, augment=False)
    for i in range(len(dataset)):
        meta = dataset.meta(i)
        assert torch.isfinite(dataset[i]["diffuse"]).all()
        if meta["spp"] == 8:
            assert not (meta["y"] <= 20 < meta["y"] + 16 and meta["x"] <= 20 < meta["x"] + 16)
    # load time: a corrupted stored patch is skipped and counted
    shard_path = work / "packed" / "train-p16" / "shard-00000.npy"
    shard = np.load(shard_path)
    shard[0, 0, 0, 0] = np.inf
    np.save(shard_path, shard)
    dataset = ShardDataset(work / "packed", patch_size=None, augment=False)
    assert torch.isfinite(dataset[0]["diffuse"]).all() and dataset.dropped_nonfinite == 1


def test_denoise_residual_packs_emission_into_specular_and_is_checked_against_the_config(packed, tmp_path):
    from training.config import config_from_dict
    from training.data import build_datasets

    root, _stats = packed
    work = tmp_path / "residual"
    record = one_view_copy(root, work)
    pack.pack_split(work, "train", full=True, max_firefly_fraction=1.0, denoise_residual=True)
    folder = work / "packed" / "train-full-r"
    assert json.loads((folder / "index.json").read_text())["denoise_residual"] is True
    dataset = ShardDataset(folder, patch_size=None, augment=False)
    meta = dataset.meta(0)
    view = work / record["dir"]
    a = read_passes(str(view / f"spp{meta['spp']}_a.exr"))
    b = read_passes(str(view / f"spp{meta['spp']}_b.exr"))
    mean = {k: (a[k] + b[k]) / 2 for k in a}
    parts = decompose(mean)
    expected = (mean["combined"][..., :3] - parts.diffuse_color * parts.diffuse).transpose(2, 0, 1)
    np.testing.assert_allclose(dataset[0]["specular"].numpy(), expected * meta["scale"], rtol=2e-3,
                               atol=1e-3 * meta["scale"])
    assert dataset.denoise_residual and not ShardDataset(root / "packed").denoise_residual

    config = config_from_dict({"data": {"kind": "shards", "train": [str(folder)], "patch_size": 32}})
    with pytest.raises(ValueError, match="packed with --denoise-residual.*data.denoise_residual is false"):
        build_datasets(config)
    config.data.denoise_residual = True
    assert build_datasets(config)[0].denoise_residual


def test_bundle_round_trip_keeps_views_whole_and_values_close(packed, tmp_path):
    """bundle -> unbundle gives shards ShardDataset reads, values within the documented rounding, whole
    views only under --max-mb, exact bits with --lossless, and a clear error for an existing --out."""
    from training.datagen import bundle
    from training.datagen.__main__ import main as datagen_main

    root, _stats = packed
    source = root / "packed" / "train-p32"
    index = json.loads((source / "index.json").read_text())
    channels = [tuple(c) for c in index["channels"]]
    for lossless in (False, True):
        out = tmp_path / f"b{int(lossless)}.zip"
        stats = bundle.write_bundle(out, [source], [], lossless=lossless)
        assert stats["train-p32"]["shards"] == len(index["shards"]) and out.stat().st_size < sum(
            (source / s["file"]).stat().st_size for s in index["shards"])
        unpacked = tmp_path / f"u{int(lossless)}" / "train-p32"
        assert bundle.extract_bundle(out, unpacked.parent) == {"train-p32": len(index["shards"])}
        for shard in index["shards"]:
            original = np.load(source / shard["file"]).astype(np.float32)
            restored = np.load(unpacked / shard["file"]).astype(np.float32)
            assert restored.shape == original.shape
            if lossless:
                assert np.array_equal(restored, original)
                continue
            start = 0
            for name, count in channels:
                keep = bundle.MANTISSA_BITS.get(name, bundle.DEFAULT_BITS)
                a, b = original[:, start:start + count], restored[:, start:start + count]
                normal = np.abs(a) > 1e-4  # fp16 normals; subnormals keep fewer bits
                assert np.all(np.abs(b - a)[normal] <= np.abs(a)[normal] * 2.0 ** -(keep + 1) * 1.001)
                start += count
        assert len(ShardDataset(unpacked, patch_size=24)) == sum(s["count"] for s in index["shards"])
    # --fill adds whole view groups while under the budget; a --whole folder over it is refused
    full = (tmp_path / "b0.zip").stat().st_size
    part = bundle.write_bundle(tmp_path / "part.zip", [], [source], max_mb=full * 0.6 / 1e6)
    groups = bundle._view_groups(index)
    random.Random(0).shuffle(groups)  # the order write_bundle fills in (seed 0)
    assert part["train-p32"]["shards"] in {sum(len(g) for g in groups[:n]) for n in range(len(groups) + 1)}
    assert part["bytes"] <= full * 0.6 + 4096  # + the zip's directory and index
    with pytest.raises(ValueError, match="does not fit in --max-mb"):
        bundle.write_bundle(tmp_path / "no.zip", [source], [], max_mb=0.001)
    assert not (tmp_path / "no.zip").exists() and not (tmp_path / "no.zip.part").exists()
    assert datagen_main(["bundle", "--out", str(tmp_path / "part.zip"), "--fill", str(source)]) == 2
    # a bundle is data from elsewhere: member names must stay inside the output folder
    import zipfile

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(tmp_path / "b0.zip") as good, zipfile.ZipFile(evil, "w") as bad:
        for name in good.namelist():
            bad.writestr("../escaped/" + name.split("/", 1)[1], good.read(name))
    with pytest.raises(ValueError, match="outside the output folder"):
        bundle.extract_bundle(evil, tmp_path / "safe" / "inner")
    assert not (tmp_path / "safe" / "escaped").exists()
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(tmp_path / "b0.zip") as good, zipfile.ZipFile(broken, "w") as bad:
        for name in good.namelist():  # every shard cut in half
            data = good.read(name)
            bad.writestr(name, data if name.endswith("index.json") else data[:len(data) // 2])
    with pytest.raises(ValueError, match="damaged bundle"):
        bundle.extract_bundle(broken, tmp_path / "broken")
    assert not (tmp_path / "broken" / "train-p32" / "index.json").exists()


def test_a_bundle_in_parts_unpacks_into_the_whole_folder(packed, tmp_path):
    """bundle --after leaves out the views earlier parts hold; unbundle joins the parts of a folder (the
    same part twice adds nothing) and refuses to join a folder packed another way."""
    import zipfile

    from training.datagen import bundle
    from training.datagen.__main__ import main as datagen_main

    work = tmp_path / "views"  # whole views, a shard each: the unit a bundle is filled with
    shutil.copytree(packed[0], work)
    pack.pack_split(work, "train", full=True, max_firefly_fraction=1.0)
    source = work / "packed" / "train-full"
    index = json.loads((source / "index.json").read_text())
    whole = bundle.write_bundle(tmp_path / "whole.zip", [source], [])["bytes"]
    first, second = tmp_path / "b1.zip", tmp_path / "b2.zip"
    assert datagen_main(["bundle", "--out", str(first), "--fill", str(source),
                         "--max-mb", str(whole * 0.7 / 1e6)]) == 0
    assert datagen_main(["bundle", "--out", str(second), "--fill", str(source), "--after", str(first)]) == 0
    views_first = bundle.bundled_views([first])["train-full"]
    views_second = bundle.bundled_views([second])["train-full"]
    assert views_first and views_second and not views_first & views_second
    assert views_first | views_second == set(index["packed_views"])

    out = tmp_path / "unpacked"
    assert datagen_main(["unbundle", str(first), str(second), "--out", str(out)]) == 0
    merged = json.loads((out / "train-full" / "index.json").read_text())
    assert sorted(s["file"] for s in merged["shards"]) == sorted(s["file"] for s in index["shards"])
    assert sorted(merged["packed_views"]) == sorted(index["packed_views"])
    assert len(ShardDataset(out / "train-full", patch_size=24)) == sum(s["count"] for s in index["shards"])
    assert bundle.extract_bundle(second, out) == {"train-full": 0}  # the same part again: nothing new
    assert json.loads((out / "train-full" / "index.json").read_text()) == merged
    # a lossless part joined with a lossy one: the folder is lossy, with the lossy part's rounding
    lossless = tmp_path / "b2-lossless.zip"
    assert datagen_main(["bundle", "--out", str(lossless), "--fill", str(source), "--after", str(first),
                         "--lossless"]) == 0
    mixed = tmp_path / "mixed"
    for part in (lossless, first):
        bundle.extract_bundle(part, mixed)
    joined = json.loads((mixed / "train-full" / "index.json").read_text())["bundle"]
    assert joined["lossless"] is False and joined["mantissa_bits"] == merged["bundle"]["mantissa_bits"]
    bundle.extract_bundle(lossless, tmp_path / "exact")
    assert json.loads((tmp_path / "exact" / "train-full" / "index.json").read_text())["bundle"]["lossless"]

    other = tmp_path / "other.zip"  # the same folder name, packed with another patch size
    with zipfile.ZipFile(first) as good, zipfile.ZipFile(other, "w") as changed:
        for name in good.namelist():
            data = good.read(name)
            if name.endswith("index.json"):
                data = json.dumps({**json.loads(data), "patch": 48}).encode()
            changed.writestr(name, data)
    with pytest.raises(ValueError, match="already holds other shards.*patch differ"):
        bundle.extract_bundle(other, out)
    assert json.loads((out / "train-full" / "index.json").read_text()) == merged
    assert datagen_main(["bundle", "--out", str(tmp_path / "b3.zip"), "--fill", str(source),
                         "--after", str(tmp_path / "missing.zip")]) == 2


def test_mantissa_rounding_is_nearest_and_leaves_specials_alone():
    from training.datagen.bundle import round_mantissa

    values = np.array([1.0, 1.0 + 2**-6, 1.0 + 3 * 2**-6, 1.0 + 3 * 2**-7, -3.3, 65504.0, np.inf, -np.inf,
                       0.0], np.float16)
    rounded = round_mantissa(values.view(np.uint16), 5).view(np.float16).astype(np.float64)
    assert rounded[0] == 1.0 and rounded[1] == 1.0  # ties go to the even neighbour: no bias
    assert rounded[2] == 1.0 + 2**-4
    assert rounded[3] == 1.0 + 2**-5
    assert abs(rounded[4] + 3.3) <= 3.3 * 2**-6
    assert np.isfinite(rounded[5]) and rounded[5] <= 65504.0  # never rounded up into infinity
    assert rounded[6] == np.inf and rounded[7] == -np.inf and rounded[8] == 0.0


def test_packing_onto_a_folder_of_the_older_decomposition_is_refused(packed, tmp_path):
    root, _stats = packed
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    index_path = copy / "packed" / "train-p32" / "index.json"
    index = json.loads(index_path.read_text())
    assert index["version"] == pack.INDEX_VERSION
    index_path.write_text(json.dumps({**index, "version": 1}))
    with pytest.raises(ValueError, match="older decomposition"):
        pack.pack_split(copy, "train", patch=32, max_firefly_fraction=1.0)


def two_size_packs(root, work):
    """A copy of the packed run with 16-px patches next to the 32-px ones: views of two sizes."""
    shutil.copytree(root, work)
    pack.pack_split(work, "train", patch=16, max_firefly_fraction=1.0)
    return [work / "packed" / "train-p32", work / "packed" / "train-p16"]


def test_views_of_two_sizes_train_together_in_one_size_batches(packed, tmp_path):
    from training.config import config_from_dict
    from training.data import batch_stream, build_datasets, epoch_batches

    paths = [str(path) for path in two_size_packs(packed[0], tmp_path / "sizes")]
    config = config_from_dict({"data": {"kind": "shards", "train": paths, "patch_size": 32, "batch_size": 2,
                                        "workers": 0}})
    strict = build_datasets(config)[0]
    with pytest.raises(ValueError, match="patch_size 32 is larger than the stored patches"):
        strict[len(strict) - 1]  # the last sample is a 16-px one
    config.data.options = {"whole_smaller_views": True}
    dataset = build_datasets(config)[0]
    sizes = [dataset.crop_size(i) for i in range(len(dataset))]
    assert set(sizes) == {16, 32}
    batches = epoch_batches(dataset, config, epoch=0)
    for batch in batches:  # one size a batch, about 2 x 32² pixels: 2 crops of 32 or 8 views of 16
        assert len({sizes[i] for i in batch}) == 1 and len(batch) == (2 if sizes[batch[0]] == 32 else 8)
    assert sum(map(len, batches)) >= len(dataset) - 2 - 8 and len({i for b in batches for i in b}) == sum(
        map(len, batches))
    assert epoch_batches(dataset, config, epoch=1) != batches  # reshuffled every epoch
    halves = [epoch_batches(dataset, config, 0, rank, 2) for rank in (0, 1)]
    assert len(halves[0]) == len(halves[1]) and not {i for b in halves[0] for i in b} & {
        i for b in halves[1] for i in b}
    stream = batch_stream(dataset, config, 0, 1, 0, torch.device("cpu"))
    seen = {tuple(next(stream)["diffuse"].shape) for _ in range(2 * len(batches))}
    assert seen == {(2, 3, 32, 32), (8, 3, 16, 16)}
    def expected(epoch, batch):  # samples are deterministic in (seed, epoch, index)
        dataset.set_epoch(epoch)
        return torch.stack([dataset[i]["diffuse"] for i in batch])

    resumed = batch_stream(dataset, config, 0, 1, 3, torch.device("cpu"))  # resume skips the first 3
    assert torch.equal(next(resumed)["diffuse"], expected(0, batches[3]))
    later = batch_stream(dataset, config, 0, 1, len(batches) + 1, torch.device("cpu"))  # into epoch 1
    assert torch.equal(next(later)["diffuse"], expected(1, epoch_batches(dataset, config, epoch=1)[1]))

    # a non-finite sample is replaced by one of its own size, or the batch could not be stacked
    small = len(sizes) - 1  # the last sample: a 16-px one whose next neighbour (wrapping) is 32-px
    assert sizes[small] == 16 and sizes[0] == 32
    path, row, _meta = dataset.entries[small]
    stored = np.load(path)
    stored[row, 0, 0, 0] = np.inf
    np.save(path, stored)
    fresh = build_datasets(config)[0]
    stand_in = fresh[small]
    assert fresh.dropped_nonfinite == 1 and stand_in["diffuse"].shape[-1] == 16
    assert torch.isfinite(stand_in["diffuse"]).all()


def test_validation_reads_views_of_two_sizes(packed, tmp_path):
    import math

    from tests.training_helpers import tiny_config
    from training.data import SyntheticDataset, validation_batches
    from training.train import train

    val_set = ShardDataset(two_size_packs(packed[0], tmp_path / "sizes"), patch_size=None, augment=False)
    batches = validation_batches(val_set, 3)  # 8 samples of 32 px: in order, the third batch would mix
    assert sorted(i for batch in batches for i in batch) == list(range(len(val_set)))
    assert {len({val_set.crop_size(i) for i in batch}) for batch in batches} == {1}
    assert {val_set.crop_size(batch[0]) for batch in batches} == {16, 32}
    overrides = ["train.steps=1", "train.val_interval=1", "data.batch_size=3",
                 f"data.val_batches={len(batches)}"]
    config = tiny_config("kpcn", overrides)
    train_set = SyntheticDataset(8, config.data.patch_size, seed=0)
    result = train(config, tmp_path / "run", train_set=train_set, val_set=val_set, progress=False)
    assert math.isfinite(result["best_psnr"])


@pytest.mark.slow
def test_gpu_recipe_trains_from_a_bundle_for_a_wall_clock_budget(packed, tmp_path):
    """training/train_on_gpu.sh end to end on this CPU: unbundle, train.py --minutes, time the weights."""
    import subprocess
    import sys

    from tests.training_helpers import CONFIGS, REPO
    from training.datagen import bundle

    work = tmp_path / "views"
    shutil.copytree(packed[0], work)
    pack.pack_split(work, "train", full=True, max_firefly_fraction=1.0)
    source = work / "packed" / "train-full"  # in two parts, as for an upload too small for one
    whole = bundle.write_bundle(tmp_path / "whole.zip", [source], [])["bytes"]
    bundle.write_bundle(tmp_path / "b1.zip", [], [source], max_mb=whole * 0.7 / 1e6)
    bundle.write_bundle(tmp_path / "b2.zip", [], [source], after=[tmp_path / "b1.zip"])
    # a U-Net small enough to plan 100+ steps into half a minute; its three levels need sizes that are
    # multiples of 4, so the timing step must pad its frame (61 -> 64) as the core's windows are
    config = tmp_path / "small.yaml"
    config.write_text(f"base: {CONFIGS / 'fast.yaml'}\nmodel: {{widths: [4, 4, 4], predict_kernel: 3, "
                      "norm: none}\ndata: {patch_size: 32, batch_size: 2, workers: 0, val_batches: 1, "
                      "val_patch_size: null}\ntrain: {device: cpu, threads: 1}\n")
    run_dir = tmp_path / "run"
    environment = {**os.environ, "PYTHON": sys.executable, "CONFIG": str(config), "VAL_SET": "train-full",
                   "OMP_NUM_THREADS": "1"}
    parts = f"{tmp_path / 'b1.zip'},{tmp_path / 'b2.zip'}"
    command = ["sh", "training/train_on_gpu.sh", parts, "0.5", str(run_dir), "--probe-steps", "10",
               "--no-progress"]
    done = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    stored = json.loads((run_dir / "config.json").read_text())
    assert stored["train"]["steps"] >= 100 and stored["data"]["train"][0].endswith("/train-full")
    assert (run_dir / "checkpoints" / "best.safetensors").exists()
    assert "inference 64x64 on cpu" in done.stdout  # 61x61 padded to the U-Net's multiple of 4
    assert not Path(stored["data"]["train"][0]).exists()  # the unpacked bundle is a temporary folder
    shards = len(json.loads((source / "index.json").read_text())["shards"])
    assert f"'train-full': {shards}" in done.stdout  # both parts' shards, joined
