"""Data sets (:mod:`.datasets`), image files (:mod:`.images`), batching (:mod:`.loader`) and the training input
pipeline (:mod:`.pipeline`)."""
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
from .images import read_image
from .loader import ToModelInput, TrainBatches, build_augment, build_mix, eval_batches, train_val_split
from .pipeline import TrainPipeline, build_train_pipeline

__all__ = [
    "DATASETS", "DataNotFoundError", "ImageData", "Split", "ToModelInput", "TrainBatches", "TrainPipeline",
    "build_augment", "build_mix", "build_train_pipeline", "check_dataset_name", "dataset_size", "default_data_dir",
    "eval_batches", "load_dataset", "make_fake", "read_image", "train_val_split",
]
