"""Training datasets. ``ShardDataset`` reads the fp16 patch shards made by ``python -m training.datagen``."""

from training.data.shards import ShardDataset, augment_sample, transform_sample

__all__ = ["ShardDataset", "augment_sample", "transform_sample"]
