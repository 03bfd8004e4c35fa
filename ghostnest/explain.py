"""Class activation maps (``ghostnest explain``): where a trained model looks, drawn over its input images.

The maps are computed by the maintained ``grad-cam`` package (pytorch-grad-cam, ``pip install 'ghostnest[explain]'``);
nothing of CAM is written here. This module picks the layer, feeds the images through the checkpoint's own
preprocessing and draws the figures:

- methods (:data:`METHODS`): ``gradcam`` (Grad-CAM), ``gradcam++`` (Grad-CAM++), ``layercam`` (LayerCAM) use the
  gradient of the class score; ``eigencam`` (EigenCAM, the first principal component of the layer's activations),
  ``scorecam`` (Score-CAM) and ``ablationcam`` (Ablation-CAM) use forward passes only (the gradient-free ones);
- the target layer (:func:`default_target_layer`): the last stage of the network, the deepest feature map before
  pooling, as the GhostMixNet paper's Figure 6 (after the CutMix paper) draws it: ``stages.2`` of GhostMixNet,
  ``stages.<last>`` of ME-NeSt-Ghost and, for the timm baselines, the module timm's ``feature_info`` names for the
  last stage (``blocks.5`` of EfficientNet-V2-S, ``blocks.6`` of M/L/XL). ``--layer NAME`` takes any module name
  of ``model.named_modules()`` instead;
- the class explained: the predicted one, and with ``target`` also that class (a name or an index).

``explain(source, images, out_dir)`` writes ``out_dir/NNN_<image>.png`` per image (the input, the map for the
predicted class and, with a target, the map for it; the top-5 predictions in the title), ``out_dir/grid.png`` (every
image's map in one grid) and ``out_dir/explain.json`` (the predictions and file names). Everything is computed and
checked before the first file is written: a bad input writes nothing.
"""
from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported inside the functions: the command line builds its parser from METHODS without them
    import numpy as np
    import torch

# name -> (pytorch_grad_cam class, label, uses gradients)
METHODS = {
    "gradcam": ("GradCAM", "Grad-CAM", True),
    "gradcam++": ("GradCAMPlusPlus", "Grad-CAM++", True),
    "layercam": ("LayerCAM", "LayerCAM", True),
    "eigencam": ("EigenCAM", "EigenCAM", False),
    "scorecam": ("ScoreCAM", "Score-CAM", False),
    "ablationcam": ("AblationCAM", "Ablation-CAM", False),
}
INSTALL_HINT = "pip install 'ghostnest[explain]' (the grad-cam package)"
GRID_COLUMNS = 8


def check_method(method: str) -> str:
    """``method`` lower-cased if it is one of :data:`METHODS`, else ``ValueError`` listing them."""
    key = str(method).lower()
    if key not in METHODS:
        close = difflib.get_close_matches(key, METHODS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"unknown CAM method {method!r}{hint}; accepted: {', '.join(METHODS)}")
    return key


def cam_class(method: str):
    """The ``pytorch_grad_cam`` class of ``method``; ``ValueError`` with the install command if grad-cam is missing."""
    try:
        import pytorch_grad_cam
    except ImportError:
        raise ValueError(f"explain needs the optional grad-cam package: {INSTALL_HINT}") from None
    return getattr(pytorch_grad_cam, METHODS[check_method(method)][0])


def default_target_layer(model: torch.nn.Module) -> str:
    """The module name of ``model``'s last stage: timm's ``feature_info`` where the model has it (the timm
    baselines), else ``stages.<last>`` (GhostMixNet, ME-NeSt-Ghost), else ``blocks.<last>``."""
    import torch

    names = dict(model.named_modules())
    info = getattr(model, "feature_info", None)
    if isinstance(info, (list, tuple)) and info and isinstance(info[-1], dict) and info[-1].get("module") in names:
        return info[-1]["module"]
    for container in ("stages", "blocks", "layers"):
        seq = names.get(container)
        if isinstance(seq, torch.nn.Sequential) and len(seq):
            return f"{container}.{len(seq) - 1}"
    raise ValueError(f"{type(model).__name__} has no stages, blocks or feature_info to take the last stage from; "
                     "pass --layer NAME (a module name of model.named_modules())")


def resolve_layer(model: torch.nn.Module, layer: str | None) -> tuple[str, torch.nn.Module]:
    """(name, module) of the CAM's target layer: ``layer`` or :func:`default_target_layer`; ``ValueError`` naming
    the closest module names for an unknown one."""
    names = dict(model.named_modules())
    name = default_target_layer(model) if layer is None else layer
    if name not in names or name == "":
        close = difflib.get_close_matches(str(name), [n for n in names if n], n=3, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(f"no layer {name!r} in {type(model).__name__}{hint} (default: "
                         f"{default_target_layer(model)}; any name of model.named_modules())")
    return name, names[name]


def resolve_target(target: str | int | None, classes: list[str]) -> int | None:
    """A class given by name or index -> its index; ``ValueError`` if the model has no such class."""
    if target is None:
        return None
    text = str(target)
    if text in classes:
        return classes.index(text)
    try:
        index = int(text)
    except ValueError:
        index = None
    if index is not None and 0 <= index < len(classes):
        return index
    shown = ", ".join(classes[:12]) + (", ..." if len(classes) > 12 else "")
    raise ValueError(f"--target {text!r} is not one of the model's {len(classes)} classes (a name: {shown}; or an "
                     f"index 0-{len(classes) - 1})")


def read_images(inputs: list[str | Path], size: int) -> tuple[list[str], torch.Tensor]:
    """(ids, float batch (N, 3, size, size) of pixel values 0-255) of image files and folders, resized as
    ``predict`` resizes them (bicubic, antialiased); ``ValueError`` naming a file that is not an image."""
    import torch

    from .data.datasets import read_image
    from .data.loader import resize_batch
    from .train.evaluate import _image_files

    files = _image_files([str(p) for p in inputs])
    batch = torch.stack([resize_batch(read_image(f)[None].float(), size)[0].clamp(0, 255) for _, f in files])
    return [ident for ident, _ in files], batch


def compute_cams(model: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor, classes: list[int],
                 method: str = "gradcam", batch_size: int = 16) -> np.ndarray:
    """(N, H, W) maps in [0, 1] of ``method`` for class ``classes[i]`` of input ``x[i]`` (already preprocessed,
    on the model's device), computed by grad-cam in batches."""
    import numpy as np
    import torch

    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    kind = cam_class(method)
    cam = kind(model=model, target_layers=[layer])
    if hasattr(cam, "batch_size"):  # Score-CAM / Ablation-CAM: masked copies per forward pass
        cam.batch_size = 64
    try:
        out = []
        for i in range(0, len(x), batch_size):
            targets = [ClassifierOutputTarget(int(c)) for c in classes[i:i + batch_size]]
            with torch.enable_grad():
                out.append(cam(input_tensor=x[i:i + batch_size], targets=targets))
        return np.concatenate(out).astype(np.float32)
    finally:
        cam.activations_and_grads.release()


def overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """grad-cam's overlay of a map on an (H, W, 3) float image in [0, 1] (jet colour map, 60% image)."""
    import numpy as np

    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(image.astype(np.float32), cam, use_rgb=True, image_weight=0.6)


def _file_stem(index: int, ident: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(ident).with_suffix("").as_posix())
    return f"{index:03d}_{stem.strip('._')[:60] or 'image'}"


def _colorbar(fig, axes, plt) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig.colorbar(ScalarMappable(Normalize(0, 1), "jet"), ax=axes, fraction=0.035, pad=0.02,
                 label="class activation\n(1: the image's maximum)")


def explain(source: str | Path, images: list[str | Path], out_dir: str | Path, method: str = "gradcam",
            target: str | int | None = None, layer: str | None = None, device: str = "auto",
            batch_size: int = 16) -> dict:
    """Class activation maps of the checkpoint ``source`` (a run directory or a ``.safetensors`` checkpoint) on
    ``images`` (files and folders) into ``out_dir``; returns ``explain.json``'s content with the paths written."""
    import numpy as np
    import torch

    from .figures import save_figure
    from .fileio import atomic_write_text

    from .data.loader import ToModelInput
    from .devices import resolve_device
    from .train.checkpoint import load_checkpoint

    method = check_method(method)
    cam_class(method)  # grad-cam installed?
    if Path(source).suffix.lower() in (".onnx", ".pt2"):
        raise ValueError(f"{source} is an exported model file; explain needs the PyTorch model: pass the run directory "
                         "or its .safetensors checkpoint (the maps hook into the network's layers)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; give a directory")
    dev = resolve_device(device)
    model, meta = load_checkpoint(source, dev)
    classes = [str(c) for c in meta["classes"]]
    layer_name, module = resolve_layer(model, layer)
    target_index = resolve_target(target, classes)
    size = int(meta["input_size"])
    ids, batch = read_images(images, size)

    x = ToModelInput(meta["mean"], meta["std"], (), dev)(batch)
    with torch.no_grad():
        probs = torch.cat([model(x[i:i + batch_size]).float().softmax(1) for i in range(0, len(x), batch_size)]).cpu()
    k = min(5, len(classes))
    top_p, top_i = probs.topk(k, dim=1)
    pred = top_i[:, 0].tolist()
    cams = {"predicted": compute_cams(model, module, x, pred, method, batch_size)}
    if target_index is not None:
        cams["target"] = compute_cams(model, module, x, [target_index] * len(x), method, batch_size)
    shown = batch.permute(0, 2, 3, 1).numpy().astype(np.float32) / 255.0

    label = METHODS[method][1]
    figures, records = [], []
    for i, ident in enumerate(ids):
        top5 = [{"class": classes[c], "index": int(c), "probability": round(float(p), 6)}
                for p, c in zip(top_p[i].tolist(), top_i[i].tolist(), strict=True)]
        panels = [("input", shown[i], None), (f"{label}: {classes[pred[i]]} (predicted)", shown[i],
                                              cams["predicted"][i])]
        if target_index is not None:
            panels.append((f"{label}: {classes[target_index]} (--target, "
                           f"{100 * probs[i, target_index].item():.1f}%)", shown[i], cams["target"][i]))
        name = _file_stem(i, ident) + ".png"
        figures.append((name, panels, ident, top5))
        records.append({"image": ident, "png": name, "predicted": classes[pred[i]],
                        "confidence": round(float(top_p[i, 0]), 6), "top5": top5,
                        **({"target": classes[target_index],
                            "target_probability": round(float(probs[i, target_index]), 6)}
                           if target_index is not None else {})})
    title = (f"{label} at layer {layer_name} of {meta['model']} ({len(ids)} image(s)"
             f"{'' if target_index is None else f', maps for {classes[target_index]!r}'})")
    grid = _grid_figure(shown, cams["target" if target_index is not None else "predicted"], records, title,
                        target_index is not None)
    pages = [(name, _image_figure(panels, ident, top5, meta["model"], layer_name)) for name, panels, ident, top5
             in figures]

    out.mkdir(parents=True, exist_ok=True)
    written = [save_figure(fig, out / name) for name, fig in pages]
    grid_path = save_figure(grid, out / "grid.png")
    summary = {"source": str(source), "model": meta["model"], "method": method, "layer": layer_name,
               "target": classes[target_index] if target_index is not None else None, "device": str(dev),
               "images": records}
    atomic_write_text(out / "explain.json", json.dumps(summary, indent=2) + "\n")
    return {**summary, "grid": str(grid_path), "files": [str(p) for p in written], "json": str(out / "explain.json")}


def _image_figure(panels, ident: str, top5: list[dict], model: str, layer: str):
    import numpy as np

    from .figures import image_panel, pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1.0, 3.9), layout="constrained")
    for ax, (title, image, cam) in zip(np.atleast_1d(axes), panels, strict=True):
        image_panel(ax, image if cam is None else overlay(image, cam), title, fontsize=9)
    _colorbar(fig, list(np.atleast_1d(axes)), plt)
    top = ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in top5)
    fig.suptitle(f"{ident}: {model}, layer {layer}\ntop-5: {top}", fontsize=10)
    return fig


def _grid_figure(shown: np.ndarray, cams: np.ndarray, records: list[dict], title: str, targeted: bool):
    """Every image above its map: rows alternate between the inputs and their maps, :data:`GRID_COLUMNS` wide."""
    from .figures import image_panel, pyplot

    plt = pyplot()
    n = len(records)
    cols = min(GRID_COLUMNS, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(1.9 * cols + 1.4, 3.9 * rows + 0.8), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for i, r in enumerate(records):
        top, bottom = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
        top.axis("on")
        bottom.axis("on")
        caption = f"{Path(r['image']).name[:18]}\npred {r['predicted']} ({100 * r['confidence']:.0f}%)"
        if targeted:
            caption += f", p({r['target']}) {100 * r['target_probability']:.0f}%"
        image_panel(top, shown[i], caption, fontsize=8)
        image_panel(bottom, overlay(shown[i], cams[i]))
    for row in range(rows):
        axes[2 * row, 0].set_ylabel("image", fontsize=9)
        axes[2 * row + 1, 0].set_ylabel("map", fontsize=9)
    _colorbar(fig, list(axes.flat), plt)
    fig.suptitle(title, fontsize=10)
    return fig
