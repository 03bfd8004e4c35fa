"""What a recipe's augmentation does to its training images (``ghostnest recipes preview``, and the image a
TensorBoard-logging run writes at its start).

The images come out of the training input pipeline itself (:func:`ghostnest.data.build_train_pipeline`), drawn the
way the first batch of epoch 1 is drawn on rank 0 (:func:`ghostnest.data.loader.epoch_seeds`: the same shuffle, the same
per-image augmentation, the same random state before mixing), on the CPU. Nothing of the augmentation is
re-implemented here.

The figure follows the GhostMixNet paper's Figure 6 (after the CutMix paper): one row per sample, the columns
*stored image* (only when the recipe has per-image augmentation), *training input* (after the per-image
augmentation, resized and normalised as the model sees it, shown de-normalised), *Mixup* and *CutMix* (only the ones
the recipe turns on), each mixed image with its mixed label under it (``cat (0.73) + dog (0.27)``). Training mixes
each batch with one of the two (Mixup with probability ``mixup_p``); the preview applies each of the recipe's
transforms to the same batch from the same random state, so that both can be seen side by side. A recipe with
neither augmentation nor mixing gets a plain grid of its training inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.loader import epoch_seeds
from ..figures import image_panel, pyplot


@dataclass
class Preview:
    """The first ``samples`` images of the first training batch at each step of the pipeline (HWC float in [0, 1])."""

    title: str
    classes: list[str]
    labels: list[int]
    stored: np.ndarray | None  # the stored images at the training size (None: no per-image augmentation)
    inputs: np.ndarray  # the training inputs before mixing
    # name -> (images, soft labels, the batch's mixing weight lambda of each image's own label, None if unknown)
    mixed: dict[str, tuple[np.ndarray, torch.Tensor, float | None]] = field(default_factory=dict)
    model_inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # the normalised tensors (tests compare)


def _components(mix) -> list:
    from torchvision.transforms import v2

    if mix is None:
        return []
    return list(mix.transforms) if isinstance(mix, v2.RandomChoice) else [mix]


def _lam(soft: torch.Tensor, labels: torch.Tensor) -> float | None:
    """The batch's lambda (both transforms draw one per batch and mix image i with image i-1): the weight of an
    image's own label where its partner has another class."""
    other = labels != labels.roll(1, 0)
    if not other.any():
        return None
    i = int(other.nonzero()[0, 0])
    return float(soft[i, labels[i]])


def _name(transform) -> str:
    return {"MixUp": "Mixup", "CutMix": "CutMix"}.get(type(transform).__name__, type(transform).__name__)


def build_preview(cfg, data, samples: int = 6) -> Preview:
    """The :class:`Preview` of resolved config ``cfg`` on ``data`` (``load_dataset(cfg.dataset, ...)``)."""
    from ..data import build_train_pipeline
    from ..data.loader import resize_steps

    pipe = build_train_pipeline(cfg, data, torch.device("cpu"))
    order_seed, worker_seed, rng_seed = epoch_seeds(cfg.seed, 0, 0)
    n = min(samples, pipe.batches.batch_size)
    mean = torch.tensor(data.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1)

    def shown(x: torch.Tensor) -> np.ndarray:
        return (x[:n] * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()

    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(rng_seed)
        epoch = pipe.batches.epoch(order_seed, worker_seed)
        try:
            images, labels = next(epoch)
        finally:
            epoch.close()  # stops the loader's workers
        x = pipe.preprocess(images)
        state = torch.get_rng_state()
        mixed, model_inputs = {}, {"inputs": x[:n]}
        for transform in _components(pipe.mix):
            torch.set_rng_state(state)  # each from the random state training's mixing starts from
            xm, ym = transform(x, labels)
            mixed[_name(transform)] = (shown(xm), ym[:n], _lam(ym, labels))
            model_inputs[_name(transform)] = xm[:n]
    stored = None
    if pipe.augment is not None:
        pipe.batches.sampler.set_epoch(order_seed)  # the sampler's own order of this epoch: the batch's indices
        idx = torch.tensor(list(pipe.batches.sampler)[:n])
        raw = pipe.train_split.images[idx].float()
        sizes = resize_steps(data.train.images.shape[-1], data.size, pipe.image_size)
        from ..data.loader import resize_batch

        for s in sizes:
            raw = resize_batch(raw, s).clamp(0, 255)
        stored = raw.permute(0, 2, 3, 1).numpy() / 255.0
    import textwrap

    lines = [f"recipe {cfg.recipe}: {data.name} at {pipe.image_size}px, the first training batch of epoch 1 (seed "
             f"{cfg.seed})"]
    lines.append(f"per-image augmentation: {', '.join(op['op'] for op in cfg.augment)}" if cfg.augment
                 else "no per-image augmentation")
    if mixed:
        alphas = [f"Mixup alpha {cfg.mixup_alpha:g}" if cfg.mixup_alpha > 0 else "",
                  f"CutMix alpha {cfg.cutmix_alpha:g}" if cfg.cutmix_alpha > 0 else ""]
        lines.append(", ".join(a for a in alphas if a) + ", one lambda per batch" + (
            f"; training mixes each batch with one of the two (Mixup with p={cfg.mixup_p:g})"
            if len(mixed) == 2 else ""))
    else:
        lines.append("no Mixup/CutMix")
    title = "\n".join(textwrap.fill(line, 40 + 25 * (2 + (pipe.augment is not None) + len(mixed)))
                      for line in lines)
    return Preview(title, [str(c) for c in data.classes], labels[:n].tolist(), stored, shown(x), mixed, model_inputs)


def mixed_label(soft: torch.Tensor, classes: list[str]) -> str:
    """``cat (0.73) + dog (0.27)``: the (at most two) classes of a mixed label with their weights."""
    weights, index = soft.float().topk(min(2, soft.numel()))
    parts = [f"{classes[i]} ({w:.2f})" for w, i in zip(weights.tolist(), index.tolist(), strict=True) if w >= 0.005]
    return " + ".join(parts)


def preview_figure(p: Preview):
    """The figure of a :class:`Preview` (matplotlib, not yet saved)."""
    plt = pyplot()
    n = len(p.labels)
    columns = ([("stored image", p.stored, None)] if p.stored is not None else []) + \
        [("training input", p.inputs, None)] + [
            (name if lam is None else f"{name} (\u03bb = {lam:.2f})", imgs, soft)
            for name, (imgs, soft, lam) in p.mixed.items()]
    if len(columns) == 1:  # nothing to compare: a grid of training inputs with their labels
        cols = min(8, n)
        rows = -(-n // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.1 * rows + 0.9), squeeze=False,
                                 layout="constrained")
        for ax in axes.flat:
            ax.axis("off")
        for i in range(n):
            axes.flat[i].axis("on")
            image_panel(axes.flat[i], p.inputs[i], f"label {p.classes[p.labels[i]]}", fontsize=9)
        fig.suptitle(p.title, fontsize=10)
        return fig
    fig, axes = plt.subplots(n, len(columns), figsize=(2.4 * len(columns) + 0.6, 2.35 * n + 0.9), squeeze=False,
                             layout="constrained")
    for j, (name, imgs, soft) in enumerate(columns):
        for i in range(n):
            ax = axes[i, j]
            caption = mixed_label(soft[i], p.classes) if soft is not None else f"label {p.classes[p.labels[i]]}"
            image_panel(ax, imgs[i], None)
            ax.set_xlabel(caption, fontsize=9)
            if i == 0:
                ax.set_title(name, fontsize=11, fontweight="bold")
    fig.suptitle(p.title, fontsize=10)
    return fig


def write_preview(recipe: str, out: str | Path, overrides: list[str] = (), data_dir: str | None = None,
                  samples: int = 6) -> dict:
    """``ghostnest recipes preview RECIPE --out FILE``: the preview figure of a recipe (+ ``--set`` overrides) as
    a PNG (or SVG/JPEG by the suffix), written atomically; ``ValueError`` for a bad recipe, data set or path."""
    from ..data import default_data_dir, load_dataset
    from ..figures import save_figure
    from .config import resolve_config

    out = Path(out)
    if out.is_dir() or out.suffix.lower() not in (".png", ".svg", ".jpg", ".jpeg"):
        raise ValueError(f"--out {str(out)!r} must be an image file name ending in .png, .svg or .jpg")
    if samples < 1:
        raise ValueError(f"--samples {samples} must be a positive number of images")
    cfg = resolve_config(recipe, list(overrides) + ([f"data_dir={data_dir}"] if data_dir else []))
    data = load_dataset(cfg.dataset, cfg.data_dir or default_data_dir(), download=cfg.download)
    p = build_preview(cfg, data, samples)
    save_figure(preview_figure(p), out)
    return {"path": str(out), "recipe": cfg.recipe, "dataset": data.name, "samples": len(p.labels),
            "columns": (["stored image"] if p.stored is not None else []) + ["training input", *p.mixed]}
