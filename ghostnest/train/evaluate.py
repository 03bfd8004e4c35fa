"""Evaluation and prediction from a checkpoint, with the preprocessing the checkpoint records.

``evaluate_checkpoint``: top-1, top-5, per-class accuracy and a confusion-matrix PNG on a data set's test split.
``predict``: one class per image file, written as ``ID,label,name,confidence`` (the layout of the course-competition
submission the GhostMixNet authors made; GhostMixNet, "Test Acc.").
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch

from ..data import default_data_dir, load_dataset
from ..data.images import read_image
from ..data.loader import ToModelInput, resize_batch, resize_steps
from ..devices import resolve_device
from ..fileio import atomic_write_bytes, atomic_write_text
from .checkpoint import load_checkpoint, resolve_checkpoint_path
from .engine import evaluate

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def plot_confusion(path: Path, matrix: torch.Tensor, classes: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    side = min(max(4.0, 0.35 * n + 2), 30.0)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(matrix.numpy(), cmap="Blues")
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def test_split_of(meta: dict, path: Path, dataset: str | None, data_dir: str | None):
    """(name, data) of the data set a checkpoint is evaluated on: ``dataset`` or the one it was trained on, with the
    checkpoint's class count (else ``ValueError``)."""
    name = dataset or meta["dataset"]
    data = load_dataset(name, data_dir or default_data_dir(), download=True)
    if data.num_classes != int(meta["num_classes"]):
        raise ValueError(f"{path} was trained for {meta['num_classes']} classes but {name} has {data.num_classes}; "
                         "evaluate on a data set with the same classes (--dataset)")
    return name, data


def eval_preprocess(data, meta: dict, device: torch.device) -> ToModelInput:
    """The evaluation preprocessing of a checkpoint on ``data``: stored pixels -> its input size, its mean/std."""
    sizes = resize_steps(data.train.images.shape[-1], data.size, int(meta["input_size"]))
    return ToModelInput(meta["mean"], meta["std"], sizes, device)


def _report(res: dict, labels: torch.Tensor, meta: dict, png: Path, title: str) -> dict:
    """Per-class top-1 and the confusion matrix (drawn to ``png``) of ``evaluate(..., with_preds=True)``'s result."""
    n = int(meta["num_classes"])
    matrix = torch.bincount(labels * n + res["preds"], minlength=n * n).view(n, n)
    per_class = {c: round(100.0 * matrix[i, i].item() / max(matrix[i].sum().item(), 1), 3)
                 for i, c in enumerate(meta["classes"])}
    png.parent.mkdir(parents=True, exist_ok=True)
    plot_confusion(png, matrix, meta["classes"], f"{title}: top-1 {res['top1']:.2f}%")
    return {"images": len(labels), "top1": res["top1"], "top5": res["top5"], "loss": res["loss"],
            "per_class_top1": per_class, "confusion_matrix": matrix.tolist(), "confusion_png": str(png)}


def evaluate_checkpoint(checkpoint: str | Path, dataset: str | None = None, data_dir: str | None = None,
                        device: str = "auto", batch_size: int = 256, out_dir: str | Path | None = None) -> dict:
    """Evaluate a checkpoint (or a run directory's best one) on the test split of ``dataset``
    (default: the data set it was trained on). Writes ``confusion.png`` (and ``eval.json``) next to the
    checkpoint, or into ``out_dir``."""
    path = resolve_checkpoint_path(checkpoint)
    dev = resolve_device(device)
    model, meta = load_checkpoint(path, dev)
    name, data = test_split_of(meta, path, dataset, data_dir)
    res = evaluate(model, data.test, eval_preprocess(data, meta, dev), batch_size,
                   lambda: torch.autocast(dev.type, enabled=False), meta["num_classes"], with_preds=True)
    out = Path(out_dir) if out_dir else path.parent
    result = {"checkpoint": str(path), "model": meta["model"], "dataset": name,
              **_report(res, data.test.labels, meta, out / "confusion.png", f"{meta['model']} on {name}")}
    atomic_write_text(out / "eval.json", json.dumps(result, indent=2) + "\n")
    return result


def _image_files(inputs: list[str]) -> list[tuple[str, Path]]:
    files: list[tuple[str, Path]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            files += [(str(f.relative_to(p)), f) for f in found]
        elif p.is_file():
            files.append((p.name, p))
        else:
            raise FileNotFoundError(f"{item}: no such image or folder")
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {', '.join(inputs)}")
    return files


@torch.no_grad()
def predict(checkpoint: str | Path, inputs: list[str], out: str | Path = "predictions.csv", device: str = "auto",
            batch_size: int = 64) -> list[dict]:
    """Classify image files with a checkpoint or an exported ``.onnx`` file; writes ``ID,label,name,confidence``
    rows to ``out`` (atomically).

    Every image is resized (bicubic, antialiased) to the checkpoint's ``input_size`` and normalised with its
    ``mean``/``std``: the preprocessing of its training run.
    """
    dev = resolve_device(device)
    if Path(checkpoint).suffix == ".onnx":  # an exported model, run by onnxruntime on the CPU
        from ..export import OnnxClassifier

        model, dev = OnnxClassifier(checkpoint), torch.device("cpu")
        meta = model.metadata
    else:
        model, meta = load_checkpoint(checkpoint, dev)
    files = _image_files(inputs)
    size = int(meta["input_size"])
    norm = ToModelInput(meta["mean"], meta["std"], size, dev)
    rows = []
    for i in range(0, len(files), batch_size):
        chunk = files[i:i + batch_size]
        batch = torch.stack([resize_batch(read_image(f, size)[None].float(), size)[0].clamp(0, 255) for _, f in chunk])
        probs = model(norm(batch)).float().softmax(dim=1)
        conf, label = probs.max(dim=1)
        for (ident, _), c, lab in zip(chunk, conf.tolist(), label.tolist(), strict=True):
            rows.append({"ID": ident, "label": lab, "name": meta["classes"][lab], "confidence": round(c, 6)})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["ID", "label", "name", "confidence"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    out = Path(out)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True)
    atomic_write_text(out, buf.getvalue())
    return rows


def evaluate_model_file(model_file: str | Path, checkpoint: str | Path, dataset: str | None = None,
                        data_dir: str | None = None, batch_size: int = 256, out_dir: str | Path | None = None,
                        threads: int | None = None) -> dict:
    """``ghostnest eval RUN --model-file FILE.onnx``: the report of :func:`evaluate_checkpoint` (top-1, top-5,
    per-class accuracy, confusion matrix) for an exported fp32 or int8 ONNX file run by onnxruntime on the CPU, on
    the test split of the run's data set, fed through the run's evaluation preprocessing; plus how many test
    predictions differ from the fp32 checkpoint's (run in PyTorch on the same batches).

    The file must have been exported for the run's classes and input size (else ``ValueError``). Writes
    ``FILE.confusion.png`` and ``FILE.eval.json`` beside the file, or into ``out_dir``.
    """
    import contextlib

    from ..export import OnnxClassifier

    model_file = Path(model_file)
    path = resolve_checkpoint_path(checkpoint)
    if model_file.suffix != ".onnx":
        raise ValueError(f"--model-file {model_file}: expected an exported .onnx file (fp32 or --int8)")
    runner = OnnxClassifier(model_file, threads=threads)
    fmeta = runner.metadata
    model, meta = load_checkpoint(path, "cpu")
    n = int(meta["num_classes"])
    if int(fmeta.get("num_classes", len(fmeta.get("classes", [])))) != n:
        raise ValueError(f"{model_file} was exported for {fmeta.get('num_classes')} classes but {path} has {n}; "
                         "evaluate a file exported from this run")
    if int(fmeta.get("input_size", -1)) != int(meta["input_size"]):
        raise ValueError(f"{model_file} takes {fmeta.get('input_size')}x{fmeta.get('input_size')} images but {path} "
                         f"was trained at {meta['input_size']}x{meta['input_size']}; evaluate a file exported from "
                         "this run (without --input)")
    name, data = test_split_of(meta, path, dataset, data_dir)
    norm = eval_preprocess(data, meta, torch.device("cpu"))
    fp32 = contextlib.nullcontext
    ref = evaluate(model, data.test, norm, batch_size, fp32, n, with_preds=True)
    res = evaluate(runner, data.test, norm, batch_size, fp32, n, with_preds=True)
    out = Path(out_dir) if out_dir else model_file.parent
    stem = model_file.name[:-len(".onnx")]
    result = {"model_file": str(model_file), "precision": "int8" if runner.int8 else "fp32", "checkpoint": str(path),
              "model": meta["model"], "dataset": name,
              **_report(res, data.test.labels, meta, out / f"{stem}.confusion.png", f"{model_file.name} on {name}"),
              "checkpoint_top1": ref["top1"], "checkpoint_top5": ref["top5"],
              "predictions_differ": int((res["preds"] != ref["preds"]).sum()),
              "file_bytes": model_file.stat().st_size}
    if runner.int8:
        result["int8"] = fmeta["int8"]
    atomic_write_text(out / f"{stem}.eval.json", json.dumps(result, indent=2) + "\n")
    return result
