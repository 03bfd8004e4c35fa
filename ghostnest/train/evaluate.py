"""Evaluation and prediction from a checkpoint, with the preprocessing the checkpoint records.

``evaluate``: loss, top-1 and top-5 of a model on a split (the validation of every training epoch uses it too).
``evaluate_checkpoint``: top-1, top-5, per-class accuracy and a confusion-matrix PNG on a data set's test split.
``predict``: one class per image file, written as ``ID,label,name,confidence`` (the layout of the course-competition
submission the GhostMixNet authors made; GhostMixNet, "Test Acc.").
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import re
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import Split, default_data_dir, eval_batches, load_dataset
from ..data.images import read_image
from ..data.loader import ToModelInput, resize_batch, resize_steps
from ..devices import resolve_device
from ..figures import plot_confusion
from ..fileio import atomic_write_text
from ..modelfile import OnnxClassifier
from .checkpoint import load_checkpoint, resolve_checkpoint_path
from .rundir import read_run_config


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@torch.no_grad()
def evaluate(model, split, preprocess: ToModelInput, batch_size: int, autocast, num_classes: int,
             with_preds: bool = False, reduce=None):
    """Mean cross entropy (no smoothing), top-1 and top-5 accuracy in percent; optionally the predictions.

    ``reduce`` (``Dist.sum``) adds up the sums of every rank's shard of the data set before the division."""
    model.eval()
    k = min(5, num_classes)
    device = preprocess.device
    loss_sum, top1, top5 = (torch.zeros((), device=device) for _ in range(3))
    preds = []
    for images, labels in eval_batches(split, batch_size, device):
        with autocast():
            logits = model(preprocess(images))
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        topk = logits.topk(k, dim=1).indices
        top1 += (topk[:, 0] == labels).sum()
        top5 += (topk == labels[:, None]).any(dim=1).sum()
        if with_preds:
            preds.append(topk[:, 0].cpu())
    sums = [loss_sum.item(), top1.item(), top5.item(), len(split)]
    loss_sum, top1, top5, n = reduce(sums) if reduce is not None else sums
    n = max(n, 1)
    out = {"loss": loss_sum / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n}
    if with_preds:
        out["preds"] = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
    return out


def test_split_of(meta: dict, path: Path, dataset: str | None, data_dir: str | None):
    """(name, data, notes) of the data set a checkpoint is evaluated on: ``dataset`` or the one it was trained on,
    with the checkpoint's class count (else ``ValueError``). Class names that differ from the checkpoint's are named
    in ``notes``; the same names in another order are mapped onto the checkpoint's indices (and noted)."""
    name = dataset or meta["dataset"]
    data = load_dataset(name, data_dir or default_data_dir(), download=True)
    if data.num_classes != int(meta["num_classes"]):
        raise ValueError(f"{path} was trained for {meta['num_classes']} classes but {name} has {data.num_classes}; "
                         "evaluate on a data set with the same classes (--dataset)")
    notes = []
    ours, theirs = list(meta["classes"]), list(data.classes)
    if theirs != ours and sorted(theirs) == sorted(ours):
        index = torch.tensor([ours.index(c) for c in theirs])
        data = replace(data, test=Split(data.test.images, index[data.test.labels]), classes=ours)
        notes.append(f"{name} lists the checkpoint's class names in another order; its labels were mapped onto the "
                     "checkpoint's by name")
    elif theirs != ours:
        pairs = [(i, a, b) for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
        shown = ", ".join(f"{i}: {a!r} vs {b!r}" for i, a, b in pairs[:5]) + (", ..." if len(pairs) > 5 else "")
        notes.append(f"class names differ between the checkpoint and {name} at {len(pairs)} of {len(ours)} indices "
                     f"(checkpoint vs data set: {shown}); accuracy counts matching indices, so it means something "
                     "only if the indices mean the same classes")
    return name, data, notes


def output_names(out: Path, dataset: str, trained_on: str | None, prefix: str = "") -> tuple[Path, Path]:
    """(confusion PNG, eval JSON) of an evaluation: ``PREFIXconfusion.png`` / ``PREFIXeval.json`` on the data set the
    checkpoint was trained on, ``PREFIXconfusion-DATASET.png`` / ``PREFIXeval-DATASET.json`` on another one, so an
    evaluation elsewhere never replaces the run's own."""
    suffix = "" if dataset == trained_on else "-" + _slug(dataset)
    return out / f"{prefix}confusion{suffix}.png", out / f"{prefix}eval{suffix}.json"


def _slug(name: str) -> str:
    """A data set name as part of a file name: ``fake:classes=3,size=16`` -> ``fake-classes=3-size=16``."""
    slug = re.sub(r"[^A-Za-z0-9._=+]+", "-", name).strip("-.") or "dataset"
    if len(slug) > 80:  # a long imagefolder path: its tail and a hash of the whole name
        slug = f"{slug[-60:].lstrip('-.')}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return slug


def pick_weights(source: str | Path, which: str | None = None) -> Path:
    """The weights file ``eval`` reads: a checkpoint file itself; in a run directory ``best.safetensors``
    (``which="best"``), ``last.safetensors`` (``"last"``), or by default best if the run has one, else last."""
    source = Path(source)
    if which is None:
        return resolve_checkpoint_path(source)
    if which not in ("best", "last"):
        raise ValueError(f"--checkpoint {which!r}: choose best or last")
    if not source.is_dir():
        raise ValueError(f"--checkpoint {which} picks the weights of a run directory; {source} is a file (pass the run "
                         "directory, or drop --checkpoint)")
    path = source / f"{which}.safetensors"
    if not path.is_file():
        resolve_checkpoint_path(source)  # not a run directory at all: that error first
        raise FileNotFoundError(f"{source} has no {path.name} yet (no epoch has finished); evaluate its last weights "
                                "with --checkpoint last, or continue the run with ghostnest train --resume "
                                f"{source}")
    return path


def default_eval_batch(device: torch.device) -> int:
    """Images per evaluation batch: 256 on a GPU; 64 on the CPU, where a smaller batch stays in the caches
    (GhostMixNet on 360 digits, one thread: 4.7 s of CPU time at 64 against 6.2 s at 256, docs/training.md)."""
    return 64 if torch.device(device).type == "cpu" else 256


@contextlib.contextmanager
def cpu_threads(threads: int | None, path: Path | None = None):
    """``torch.set_num_threads`` for the block: ``threads``, else the ``threads`` of the run the checkpoint ``path``
    belongs to (its recipe's choice for this machine, e.g. the quickstart's 1), else PyTorch's default."""
    if threads is None and path is not None and (path.parent / "config.yaml").is_file():
        with contextlib.suppress(Exception):  # a damaged config.yaml: PyTorch's default
            threads = read_run_config(path.parent).threads
    if threads is not None and int(threads) < 1:
        raise ValueError(f"--threads {threads} must be a positive number of CPU threads")
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def weights_facts(path: Path, meta: dict) -> dict:
    """Which weights an evaluation used and where the run stood: ``weights`` (file name), ``epoch`` (finished epochs
    when saved), ``step`` (steps into the next epoch, for a mid-epoch save), ``run_finished`` (None for a
    checkpoint outside a run directory) and, for an unfinished run, ``note``: one line saying so."""
    run = path.parent
    facts = {"weights": path.name, "epoch": meta.get("epoch"), "step": int(meta.get("step") or 0),
             "run_finished": None}
    if not (run / "config.yaml").is_file():
        return facts
    facts["run_finished"] = (run / "results.json").is_file()
    if facts["run_finished"]:
        return facts
    try:
        epochs = f" of {read_run_config(run).epochs}"
    except Exception:  # a damaged config.yaml: the note goes without the epoch count
        epochs = ""
    epoch, step = int(meta.get("epoch") or 0), facts["step"]
    if step:
        total = f" of {meta['epoch_steps']}" if meta.get("epoch_steps") else ""
        when = f"saved at step {step}{total} of epoch {epoch + 1}{epochs}, in the middle of that epoch"
    else:
        when = f"saved after epoch {epoch}{epochs}"
    best = "" if (run / "best.safetensors").is_file() else "; it has no best.safetensors yet"
    facts["note"] = (f"{run} is an unfinished run (no results.json): evaluating {path.name}, the weights {when}"
                     f"{best}; continue it with: ghostnest train --resume {run}")
    return facts


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
                        device: str = "auto", batch_size: int | None = None, out_dir: str | Path | None = None,
                        which: str | None = None, threads: int | None = None) -> dict:
    """Evaluate a checkpoint, or a run directory's best (``which="last"``: last) one, on the test split of
    ``dataset`` (default: the data set it was trained on). Writes ``confusion.png`` and ``eval.json`` (on another
    data set ``confusion-DATASET.png`` and ``eval-DATASET.json``, :func:`output_names`) next to the checkpoint, or
    into ``out_dir``. The result says which weights it used (:func:`weights_facts`); ``notes`` holds one line per
    thing to warn about (an unfinished run, class names that differ). ``threads``: CPU threads (default: the run's
    own ``threads``, :func:`cpu_threads`); ``batch_size`` default :func:`default_eval_batch`."""
    path = pick_weights(checkpoint, which)
    dev = resolve_device(device)
    model, meta = load_checkpoint(path, dev)
    facts = weights_facts(path, meta)
    name, data, notes = test_split_of(meta, path, dataset, data_dir)
    with cpu_threads(threads, path):
        res = evaluate(model, data.test, eval_preprocess(data, meta, dev), batch_size or default_eval_batch(dev),
                       lambda: torch.autocast(dev.type, enabled=False), meta["num_classes"], with_preds=True)
    png, js = output_names(Path(out_dir) if out_dir else path.parent, name, meta.get("dataset"))
    notes = ([facts.pop("note")] if "note" in facts else []) + notes
    result = {"checkpoint": str(path), "model": meta["model"], "dataset": name, "trained_on": meta.get("dataset"),
              **facts, "notes": notes,
              **_report(res, data.test.labels, meta, png, f"{meta['model']} ({path.stem}) on {name}")}
    atomic_write_text(js, json.dumps(result, indent=2) + "\n")
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
            batch_size: int = 64, threads: int | None = None) -> list[dict]:
    """Classify image files with a checkpoint or an exported ``.onnx`` file; writes ``ID,label,name,confidence``
    rows to ``out`` (atomically).

    Every image is resized (bicubic, antialiased) to the checkpoint's ``input_size`` and normalised with its
    ``mean``/``std``: the preprocessing of its training run.
    """
    dev = resolve_device(device)
    if Path(checkpoint).suffix.lower() == ".pt2":
        raise ValueError(f"{checkpoint} is a torch.export file: predict takes a run directory, its .safetensors "
                         "checkpoint or an exported .onnx file (a .pt2 file runs in Python: torch.export.load(path)"
                         ".module(), with its preprocessing from ghostnest.export.read_metadata(path))")
    if Path(checkpoint).suffix == ".onnx":  # an exported model, run by onnxruntime on the CPU
        model, dev = OnnxClassifier(checkpoint), torch.device("cpu")
        meta = model.metadata
    else:
        model, meta = load_checkpoint(checkpoint, dev)
    files = _image_files(inputs)
    size = int(meta["input_size"])
    norm = ToModelInput(meta["mean"], meta["std"], size, dev)
    rows = []
    with cpu_threads(threads, None if Path(checkpoint).suffix == ".onnx" else resolve_checkpoint_path(checkpoint)):
        _predict_files(model, meta, files, norm, size, batch_size, rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["ID", "label", "name", "confidence"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    out = Path(out)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True)
    atomic_write_text(out, buf.getvalue())
    return rows


def _predict_files(model, meta: dict, files: list[tuple[str, Path]], norm: ToModelInput, size: int, batch_size: int,
                   rows: list[dict]) -> None:
    for i in range(0, len(files), batch_size):
        chunk = files[i:i + batch_size]
        batch = torch.stack([resize_batch(read_image(f, size)[None].float(), size)[0].clamp(0, 255) for _, f in chunk])
        probs = model(norm(batch)).float().softmax(dim=1)
        conf, label = probs.max(dim=1)
        for (ident, _), c, lab in zip(chunk, conf.tolist(), label.tolist(), strict=True):
            rows.append({"ID": ident, "label": lab, "name": meta["classes"][lab], "confidence": round(c, 6)})


def evaluate_model_file(model_file: str | Path, checkpoint: str | Path, dataset: str | None = None,
                        data_dir: str | None = None, batch_size: int = 64, out_dir: str | Path | None = None,
                        threads: int | None = None, which: str | None = None) -> dict:
    """``ghostnest eval RUN --model-file FILE.onnx``: the report of :func:`evaluate_checkpoint` (top-1, top-5,
    per-class accuracy, confusion matrix) for an exported fp32 or int8 ONNX file run by onnxruntime on the CPU, on
    the test split of the run's data set, fed through the run's evaluation preprocessing; plus how many test
    predictions differ from the fp32 checkpoint's (run in PyTorch on the same batches).

    The file must have been exported for the run's classes and input size (else ``ValueError``). Writes
    ``FILE.confusion.png`` and ``FILE.eval.json`` (on another data set ``FILE.confusion-DATASET.png``,
    ``FILE.eval-DATASET.json``) beside the file, or into ``out_dir``.
    """
    import contextlib

    model_file = Path(model_file)
    path = pick_weights(checkpoint, which)
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
    facts = weights_facts(path, meta)
    name, data, notes = test_split_of(meta, path, dataset, data_dir)
    notes = ([facts.pop("note")] if "note" in facts else []) + notes
    norm = eval_preprocess(data, meta, torch.device("cpu"))
    fp32 = contextlib.nullcontext
    with cpu_threads(threads, path):
        ref = evaluate(model, data.test, norm, batch_size, fp32, n, with_preds=True)
    res = evaluate(runner, data.test, norm, batch_size, fp32, n, with_preds=True)
    stem = model_file.name[:-len(".onnx")]
    png, js = output_names(Path(out_dir) if out_dir else model_file.parent, name, meta.get("dataset"), f"{stem}.")
    result = {"model_file": str(model_file), "precision": "int8" if runner.int8 else "fp32", "checkpoint": str(path),
              "model": meta["model"], "dataset": name, "trained_on": meta.get("dataset"), **facts, "notes": notes,
              **_report(res, data.test.labels, meta, png, f"{model_file.name} on {name}"),
              "checkpoint_top1": ref["top1"], "checkpoint_top5": ref["top5"],
              "predictions_differ": int((res["preds"] != ref["preds"]).sum()),
              "file_bytes": model_file.stat().st_size}
    if runner.int8:
        result["int8"] = fmeta["int8"]
    atomic_write_text(js, json.dumps(result, indent=2) + "\n")
    return result
