"""The training input pipeline of a recipe, built in one place for ``ghostnest train`` and ``ghostnest bench --data``.

    data = load_dataset(cfg.dataset, cfg.data_dir or default_data_dir())
    pipe = build_train_pipeline(cfg, data, torch.device("cuda"))
    for images, labels in pipe.batches.epoch(seed):       # uint8 images, int64 labels (this process's share)
        x, y = pipe.preprocess(images), labels              # float, resized, normalised, on the device
        if pipe.mix is not None:
            x, y = pipe.mix(x, y)                           # Mixup / CutMix: y becomes class probabilities

Under ``torchrun`` pass ``rank`` and ``world``: ``pipe.batches`` is then this rank's share of every global batch and
``pipe.val_shard`` its share of the validation split.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchvision.transforms import v2

from .datasets import ImageData, Split
from .loader import TrainBatches, ToModelInput, build_augment, build_mix, resize_steps, train_val_split


@dataclass
class TrainPipeline:
    """Everything between the stored uint8 images and the model, for training and validation."""

    batches: TrainBatches            # shuffled training batches, ``batches.epoch(seed, loader_seed, skip)``
    preprocess: ToModelInput         # training batch -> model input (no resize where the workers resized)
    eval_preprocess: ToModelInput    # evaluation batch -> model input (always resizes to ``image_size``)
    mix: Callable | None             # Mixup/CutMix on the preprocessed batch, or None
    augment: v2.Compose | None       # the per-image augmentation the loader workers run, or None
    sizes: tuple[int, ...]           # the resizes from stored pixels to the model input
    image_size: int                  # the model's input resolution
    train_split: Split
    val_split: Split                 # the test split when ``cfg.val_on_test``
    val_shard: Split                 # this rank's share of ``val_split`` (all of it in one process)


def split_train_val(cfg, data: ImageData) -> tuple[Split, Split]:
    """(train, validation) of a recipe: a seeded ``val_fraction`` split, or (train, test) with ``val_on_test``."""
    if cfg.val_on_test:
        return data.train, data.test  # the published GhostMixNet run validates on the test set
    return train_val_split(data.train, cfg.val_fraction, cfg.split_seed)


def build_train_pipeline(cfg, data: ImageData, device: torch.device, rank: int = 0, world: int = 1) -> TrainPipeline:
    """The input pipeline of resolved config ``cfg`` (a ``TrainConfig``) on ``data`` (``load_dataset(...)``).

    Uses ``cfg``'s image_size, val_on_test/val_fraction/split_seed, augment, augment_on/augment_group, workers,
    batch_size (the global
    batch), channels_last (CUDA only), mixup_alpha/cutmix_alpha/mixup_p. ``ValueError`` when the split holds
    less than one batch or the batch does not divide over ``world`` processes.
    """
    device = torch.device(device)
    size = cfg.image_size or data.size
    train_split, val_split = split_train_val(cfg, data)
    augment = build_augment(cfg.augment)
    sizes = resize_steps(data.train.images.shape[-1], data.size, size)
    batches = TrainBatches(train_split, sizes, cfg.batch_size, augment, cfg.workers, device, rank, world,
                           augment_on=cfg.augment_on, augment_group=cfg.augment_group)
    if len(batches) < 1:
        raise ValueError(f"{cfg.dataset} has {len(train_split)} training images, fewer than one batch of "
                         f"{cfg.batch_size}; choose a smaller batch_size")
    channels_last = cfg.channels_last and device.type == "cuda"
    val_shard = val_split.subset(torch.tensor_split(torch.arange(len(val_split)), world)[rank]) \
        if world > 1 else val_split
    return TrainPipeline(
        batches=batches,
        # training batches with per-image augmentation arrive already resized (by the loader workers or on the device)
        preprocess=ToModelInput(data.mean, data.std, () if augment else sizes, device, channels_last),
        eval_preprocess=ToModelInput(data.mean, data.std, sizes, device, channels_last),
        mix=build_mix(cfg.mixup_alpha, cfg.cutmix_alpha, cfg.mixup_p, data.num_classes),
        augment=augment, sizes=sizes, image_size=size, train_split=train_split, val_split=val_split,
        val_shard=val_shard)
