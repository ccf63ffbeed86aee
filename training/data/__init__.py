"""Training data: what the training loop reads, from two sources.

* ``shards``: ``ShardDataset`` over the fp16 patch shards ``python -m training.datagen pack`` writes
  (``training/datagen`` renders and packs them);
* ``synthetic``: ``SyntheticDataset``, procedural pairs for tests and smoke runs;
* ``sampling``: which of the two a config names, and the batches drawn from it.
"""

from training.data.sampling import batch_stream, build_datasets, epoch_batches, validation_batches
from training.data.shards import ShardDataset, augment_sample, transform_sample
from training.data.synthetic import SyntheticDataset

__all__ = ["ShardDataset", "SyntheticDataset", "augment_sample", "batch_stream", "build_datasets",
           "epoch_batches", "transform_sample", "validation_batches"]
