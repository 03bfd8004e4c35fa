"""What the report shows of one run's best checkpoint on its test split: per-class accuracy, the confusion matrix
and the worst-classified test images with their class activation maps.

``analyse_run(run, out_dir)`` loads the run's best checkpoint (:func:`ghostnest.load_checkpoint`), evaluates it on
the test split of the data set it was trained on, through its own evaluation preprocessing (the data set is read
from disk, never downloaded), and writes into ``out_dir``:

- ``confusion.png``: :func:`ghostnest.figures.plot_confusion`;
- ``worst.png``: the :data:`WORST` test images the model gives the lowest probability to their true class, each
  with the Grad-CAM of its predicted class and of its true class (``ghostnest explain``'s maps; without the
  optional grad-cam package, the images alone and a note).

It returns the figures' paths and the numbers as data, or ``{"problem": "..."}`` saying why there is nothing (no
checkpoint, the data set not on disk, ...); it never raises for a run that cannot be analysed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

WORST = 8


def analyse_run(run_path: Path, out_dir: Path, device: str = "cpu", batch_size: int = 256) -> dict:
    """The per-run analysis described in the module docstring (``{"problem": ...}`` when it cannot be made)."""
    from ..train.checkpoint import resolve_checkpoint_path

    try:
        path = resolve_checkpoint_path(run_path)
    except FileNotFoundError:
        return {"problem": "no checkpoint (best.safetensors / last.safetensors) in the run directory"}
    try:
        return _analyse(path, Path(out_dir), device, batch_size)
    except (ValueError, OSError) as exc:
        return {"problem": str(exc).splitlines()[0]}


def _analyse(path: Path, out: Path, device: str, batch_size: int) -> dict:
    from ..data import default_data_dir, load_dataset
    from ..data.loader import resize_batch, resize_steps
    from ..devices import resolve_device
    from ..figures import most_confused, plot_confusion
    from ..train.checkpoint import load_checkpoint
    from ..train.evaluate import eval_preprocess

    dev = resolve_device(device)
    model, meta = load_checkpoint(path, dev)
    classes = [str(c) for c in meta["classes"]]
    cfg_dir = _config_data_dir(path.parent)
    data = load_dataset(meta["dataset"], cfg_dir or default_data_dir(), download=False)
    if data.num_classes != len(classes):
        return {"problem": f"{meta['dataset']} has {data.num_classes} classes, the checkpoint {len(classes)}"}
    pre = eval_preprocess(data, meta, dev)
    probs = []
    with torch.no_grad():
        for i in range(0, len(data.test), batch_size):
            probs.append(model(pre(data.test.images[i:i + batch_size])).float().softmax(1).cpu())
    probs = torch.cat(probs)
    labels = data.test.labels
    pred = probs.argmax(1)
    n = len(classes)
    matrix = torch.bincount(labels * n + pred, minlength=n * n).view(n, n)
    counts = matrix.sum(1)
    per_class = {c: {"top1": round(100.0 * matrix[i, i].item() / max(counts[i].item(), 1), 2),
                     "images": int(counts[i])} for i, c in enumerate(classes)}
    top1 = 100.0 * (pred == labels).float().mean().item()
    out.mkdir(parents=True, exist_ok=True)
    confusion = plot_confusion(out / "confusion.png", matrix.numpy(), classes,
                               f"{meta['model']} on {meta['dataset']} test set ({len(labels)} images): top-1 "
                               f"{top1:.2f}%")
    p_true = probs[torch.arange(len(labels)), labels]
    worst = p_true.argsort()[:WORST]
    sizes = resize_steps(data.train.images.shape[-1], data.size, int(meta["input_size"]))
    shown = data.test.images[worst].float()
    for s in sizes:
        shown = resize_batch(shown, s).clamp(0, 255)
    shown = shown.permute(0, 2, 3, 1).numpy() / 255.0
    items = [{"index": int(i), "true": classes[labels[i]], "predicted": classes[pred[i]],
              "p_true": round(float(p_true[i]), 4), "p_predicted": round(float(probs[i, pred[i]]), 4)}
             for i in worst.tolist()]
    cams, note = None, None
    try:
        from ..explain import cam_class, compute_cams, resolve_layer

        cam_class("gradcam")
        layer_name, layer = resolve_layer(model, None)
        x = pre(data.test.images[worst])
        cams = (compute_cams(model, layer, x, pred[worst].tolist()), compute_cams(model, layer, x,
                                                                                   labels[worst].tolist()))
        note = f"Grad-CAM at layer {layer_name}"
    except ValueError as exc:  # grad-cam not installed: the images without maps
        note = str(exc)
    worst_png = _worst_figure(out / "worst.png", shown, items, cams, meta["model"], note)
    return {"checkpoint": str(path), "dataset": meta["dataset"], "images": len(labels), "top1": round(top1, 4),
            "per_class": per_class, "confusion_png": confusion, "most_confused": most_confused(matrix.numpy(), classes),
            "worst": items, "worst_png": worst_png, "cam_note": note}


def _config_data_dir(run: Path) -> str | None:
    import yaml

    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    value = cfg.get("data_dir") if isinstance(cfg, dict) else None
    return value if isinstance(value, str) and Path(value).is_dir() else None


def _worst_figure(path: Path, shown: np.ndarray, items: list[dict], cams, model: str, note: str | None) -> Path:
    from ..explain import overlay
    from ..figures import image_panel, pyplot, save_figure

    plt = pyplot()
    rows = 1 if cams is None else 3
    cols = max(len(items), 1)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols + 1.6, 2.2 * rows + 1.0), squeeze=False,
                             layout="constrained")
    labels = ["test image", "map of the predicted class", "map of the true class"]
    for j, item in enumerate(items):
        image_panel(axes[0, j], shown[j], f"true {item['true']}: {100 * item['p_true']:.0f}%\n"
                    f"pred {item['predicted']}: {100 * item['p_predicted']:.0f}%", fontsize=8)
        if cams is not None:
            image_panel(axes[1, j], overlay(shown[j], cams[0][j]))
            image_panel(axes[2, j], overlay(shown[j], cams[1][j]))
    for r in range(rows):
        axes[r, 0].set_ylabel(labels[r], fontsize=9)
    if cams is not None:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        fig.colorbar(ScalarMappable(Normalize(0, 1), "jet"), ax=list(axes[1:].flat), fraction=0.03, pad=0.02,
                     label="class activation\n(1: the image's maximum)")
    fig.suptitle(f"{model}: the {len(items)} test images with the lowest probability of their true class"
                 + (f" ({note})" if note else ""), fontsize=10)
    return save_figure(fig, path)
