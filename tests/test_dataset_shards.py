"""Packing rendered views into fp16 shards and loading training batches from them (real renders)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import OpenEXR
import pytest
import torch

from denoiser_core.passes import decompose
from training.data import ShardDataset, transform_sample
from training.datagen import pack, plan
from training.datagen.exr_io import read_passes

CONTRACT_KEYS = {"diffuse": 3, "specular": 3, "albedo": 3, "normal": 3, "depth": 1, "diffuse_variance": 1,
                 "specular_variance": 1, "diffuse_reference": 3, "specular_reference": 3, "diffuse_color": 3}


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
    assert shard.dtype == np.float16 and shard.shape[1:] == (24, 32, 32)
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
    from training.datasets import build_datasets

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
