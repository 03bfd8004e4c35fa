"""Data sets and batching for training and evaluation (see :mod:`.datasets` and :mod:`.loader`)."""
from .datasets import (
    DATASETS,
    DataNotFoundError,
    ImageData,
    Split,
    check_dataset_name,
    dataset_size,
    default_data_dir,
    load_dataset,
    make_fake,
)
from .loader import TrainBatches, build_augment, build_mix, eval_batches, train_val_split

__all__ = [
    "DATASETS", "DataNotFoundError", "ImageData", "Split", "TrainBatches", "build_augment", "build_mix",
    "check_dataset_name", "dataset_size", "default_data_dir", "eval_batches", "load_dataset", "make_fake",
    "train_val_split",
]
