"""Which datasets a config names (``data.kind``) and the batches drawn from them: the endless, resumable
training stream (one crop size a batch where sizes differ) and the validation batches."""

from __future__ import annotations

import inspect
import warnings
from collections import defaultdict

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset

from training.config import Config
from training.data.shards import PACKING_FLAGS, ShardDataset
from training.data.synthetic import SyntheticDataset


def build_datasets(config: Config) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset | None]:
    """(train, validation) datasets: ``SyntheticDataset`` or ``ShardDataset`` with ``data``'s settings."""
    d = config.data
    if d.kind == "synthetic":
        options = dict(d.options)
        length = options.pop("length", 4096)
        train = SyntheticDataset(length, d.patch_size, seed=config.train.seed, **options)
        val = SyntheticDataset(d.val_batches * d.batch_size, d.val_patch_size or d.patch_size,
                               seed=config.train.seed + 7919, **options)
        return train, val
    if not d.train:
        raise ValueError("data.kind shards needs data.train paths")
    accepted = inspect.signature(ShardDataset).parameters
    options = {k: v for k, v in d.options.items() if k in accepted}
    train = ShardDataset(d.train, patch_size=d.patch_size, seed=config.train.seed, **options)
    val = None
    if d.val:
        val_options = {**options, **({"augment": False} if "augment" in accepted else {})}
        val = ShardDataset(d.val, patch_size=d.val_patch_size, seed=config.train.seed, **val_options)
    for name, dataset in (("train", train), ("val", val)):
        for flag, option in PACKING_FLAGS.items():
            wanted = getattr(d, flag)
            packed = getattr(dataset, flag, wanted)
            if dataset is not None and packed != wanted:
                how = "with" if packed else "without"
                raise ValueError(f"data.{name} shards were packed {how} {option}, but "
                                 f"data.{flag} is {str(wanted).lower()}")
    return train, val


def batch_stream(dataset, config: Config, rank: int, world: int, start_step: int, device: torch.device):
    """Endless batches for this process. Map-style datasets are shuffled per epoch and split between
    processes (DistributedSampler; each process takes its share); on resume the epoch continues from
    where ``start_step`` falls. Iterable datasets must split themselves between workers and ranks. A dataset
    with ``whole_smaller_views`` gets batches of one crop size each (``epoch_batches``)."""
    d = config.data
    if getattr(dataset, "whole_smaller_views", False):
        yield from _one_size_batches(dataset, config, rank, world, start_step, device)
        return
    loader_args = dict(batch_size=d.batch_size, num_workers=d.workers, drop_last=True,
                       pin_memory=device.type == "cuda", persistent_workers=False)
    if isinstance(dataset, IterableDataset):
        while True:
            yield from DataLoader(dataset, **loader_args)
    per_epoch = len(dataset) // (d.batch_size * world)
    if per_epoch == 0:
        raise ValueError(f"dataset of {len(dataset)} samples is smaller than one batch on every process")
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                     seed=config.train.seed, drop_last=True)
        sampler.set_epoch(epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        # on resume: the rest of the epoch, without loading the skipped samples
        indices = list(sampler)[skip * d.batch_size:]
        yield from DataLoader(dataset, sampler=indices, **loader_args)
        epoch, skip = epoch + 1, 0


def indices_by_size(dataset) -> dict[int, list[int]]:
    """Sample indices grouped by crop side, in order (one group when samples have no ``crop_size``)."""
    size_of = getattr(dataset, "crop_size", lambda _index: 0)
    by_size: dict[int, list[int]] = defaultdict(list)
    for index in range(len(dataset)):
        by_size[size_of(index)].append(index)
    return by_size


def epoch_batches(dataset, config: Config, epoch: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """One epoch of index batches for a dataset whose samples differ in size (``crop_size``): each batch
    holds one size, and as many samples as keep it near ``batch_size`` x ``patch_size``² pixels (a batch
    of 128-px views is 4x the count of a batch of 256-px crops), so every step costs about the same. The
    batches are shuffled together; every process gets the same number."""
    d = config.data
    by_size = indices_by_size(dataset)
    budget = d.batch_size * (d.patch_size or max(by_size)) ** 2
    rng = np.random.default_rng([config.train.seed, epoch])
    batches = []
    for size, indices in sorted(by_size.items()):
        count = max(1, budget // size**2)
        if len(indices) < count:
            warnings.warn(f"{len(indices)} samples of {size} px are fewer than one batch ({count}): "
                          "they are never trained on", stacklevel=2)
        order = rng.permutation(indices).tolist()
        batches += [order[k:k + count] for k in range(0, len(order) - count + 1, count)]
    batches = [batches[k] for k in rng.permutation(len(batches))]
    return batches[rank:len(batches) // world * world:world]


def _one_size_batches(dataset, config: Config, rank: int, world: int, start_step: int, device: torch.device):
    """``batch_stream`` for datasets whose samples differ in size; every epoch has the same number of
    batches, so a resumed run skips exactly the batches it has trained on."""
    per_epoch = len(epoch_batches(dataset, config, 0, rank, world))
    if per_epoch == 0:
        raise ValueError(f"dataset of {len(dataset)} samples is smaller than one batch on every process")
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        batches = epoch_batches(dataset, config, epoch, rank, world)[skip:]
        yield from DataLoader(dataset, batch_sampler=batches, num_workers=config.data.workers,
                              pin_memory=device.type == "cuda", persistent_workers=False)
        epoch, skip = epoch + 1, 0


def validation_batches(dataset, batch_size: int, limit: int | None = None) -> list[list[int]]:
    """The first ``limit`` index batches of a validation set, in order; a set whose samples differ in
    size (``crop_size``: 128x96 and 256x256 views together) is batched size by size, or it could not
    be stacked."""
    batches = [group[k:k + batch_size] for group in indices_by_size(dataset).values()
               for k in range(0, len(group), batch_size)]
    return batches[:limit]
