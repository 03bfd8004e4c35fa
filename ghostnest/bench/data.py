"""Input-pipeline timing: images/s of a recipe's training input pipeline alone, with no model.

:func:`bench_data` (``ghostnest bench --data RECIPE``) times the data set, per-image augmentation in the recipe's
DataLoader workers, batching, per-batch resize/normalisation and Mixup/CutMix, exactly as ``ghostnest train``
builds them.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch

from ..devices import resolve_device
from .checks import check_positive
from .step import device_sync
from .summary import spread


def _data_overrides(overrides: list[str] | dict | None, workers: int | None, batch: int | None) -> dict:
    """The ``--set``-style overrides as a dict, with ``workers`` and ``batch`` (checked) added where given."""
    extra = dict(overrides) if isinstance(overrides, dict) else {}
    if isinstance(overrides, list):
        from ..train.config import parse_overrides

        extra = parse_overrides(overrides)
    if workers is not None:
        if not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be 0 or more, got {workers!r}; pass --workers 0 or more")
        extra["workers"] = workers
    if batch is not None:
        check_positive(batch=batch)
        extra["batch_size"] = batch
    return extra


def _pipeline(cfg, dev: torch.device, say: Callable[[str], None]):
    """The data set and the training input pipeline of a resolved config, as ``ghostnest train`` builds them."""
    from ..data import build_train_pipeline, default_data_dir, load_dataset

    say(f"loading {cfg.dataset}")
    data = load_dataset(cfg.dataset, cfg.data_dir or default_data_dir(), download=False)
    return data, build_train_pipeline(cfg, data, dev)


def _time_batches(pipe, dev: torch.device, warmup: int, batches: int) -> tuple[list[float], int, float]:
    """Pull ``warmup + batches`` batches through the pipeline (a ``TrainPipeline``); the timed batches' ms, their
    image count, and the seconds to the first batch (worker start-up)."""
    loader, preprocess, mix = pipe.batches, pipe.preprocess, pipe.mix
    sync = device_sync(dev)

    def stream():
        epoch = 0
        while True:  # the next epoch starts new workers, as in training
            yield from loader.epoch(epoch)
            epoch += 1

    times, n_images = [], 0
    it = stream()
    t_start = time.perf_counter()
    t_prev = t_start
    startup = None
    for i in range(warmup + batches):
        images, labels = next(it)
        x, y = preprocess(images), labels
        if mix is not None:
            x, y = mix(x, y)
        sync()
        now = time.perf_counter()
        if i == 0:
            startup = now - t_start
        if i >= warmup:
            times.append((now - t_prev) * 1e3)
            n_images += x.shape[0]
        t_prev = now
    return times, n_images, startup


def bench_data(
    recipe: str,
    overrides: list[str] | dict | None = None,
    batches: int = 20,
    warmup: int = 2,
    device: str = "auto",
    workers: int | None = None,
    batch: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Images/s of a recipe's training input pipeline alone: no model.

    Builds exactly what ``ghostnest train`` builds for ``recipe`` (with ``--set``-style ``overrides``): the data
    set, the train/validation split, the per-image augmentation run by ``workers`` DataLoader processes (the
    recipe's count unless given), the per-batch resize and normalisation on the device, and Mixup/CutMix. It then
    pulls ``warmup`` batches (worker start-up, reported as ``startup_s``) and times the next ``batches``.
    A recipe whose data set is not on disk raises the data loader's one-line error (an ``OSError``); to time the
    augmentation without the data, override the data set, e.g. ``overrides=["dataset=fake:size=32,train=4096"]``.
    """
    from ..train.config import resolve_config

    check_positive(batches=batches)
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be 0 or more, got {warmup!r}; pass --warmup 0 or more")
    cfg = resolve_config(recipe, _data_overrides(overrides, workers, batch))
    dev = resolve_device(device)
    say = progress or (lambda _msg: None)
    data, pipe = _pipeline(cfg, dev, say)
    on_device = pipe.batches.device_augment is not None
    say(f"timing {warmup} warm-up + {batches} batches of {cfg.batch_size} "
        + (f"augmented on {dev} (groups of {cfg.augment_group})" if on_device else f"with {cfg.workers} worker(s)"))
    times, n_images, startup = _time_batches(pipe, dev, warmup, batches)
    total_s = sum(times) / 1e3
    stats = spread(times)
    return {
        "recipe": cfg.recipe,
        "dataset": data.name,
        "device": str(dev),
        "image_size": pipe.image_size,
        "stored_size": int(data.train.images.shape[-1]),
        "batch": cfg.batch_size,
        "workers": cfg.workers if pipe.augment is not None and not on_device else 0,
        "augment_on": cfg.augment_on if pipe.augment is not None else None,
        "augment_group": cfg.augment_group if on_device else None,
        "augment": [op.get("op") for op in cfg.augment],
        "mixing": pipe.mix is not None,
        "batches": batches,
        "warmup": warmup,
        "batches_per_epoch": len(pipe.batches),
        "startup_s": startup,
        "images_per_s": n_images / total_s if total_s > 0 else float("inf"),
        "median_batch_ms": stats["median_ms"],
        **{key: stats[key] for key in ("p25_ms", "p75_ms", "min_ms", "max_ms")},
        "threads": torch.get_num_threads(),
    }
