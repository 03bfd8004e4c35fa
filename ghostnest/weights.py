"""Reading trained weights, wherever they are: a run directory, a ghostnest ``.safetensors`` checkpoint or export, a
hub folder (``ghostnest export RUN --format hub``), or any ``.safetensors`` state dict.

Every reader returns ``(state_dict, meta)``; ``meta`` is the checkpoint metadata ``ghostnest train`` writes (model,
model_kwargs, num_classes, classes, input_size, mean, std, dataset, ...), read from the safetensors header, or for a
hub folder from its ``config.json`` (timm's format), checked against the weights. Bad files are one-line
``ValueError``/``OSError``s naming the fix. This module sits below training and the models (it imports neither):
``ghostnest.train.checkpoint`` and ``ghostnest.create_model(name, pretrained=PATH)`` both read through it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .modelfile import METADATA_KEY, safetensors_metadata

REQUIRED_META = ("model", "model_kwargs", "num_classes", "classes", "input_size", "mean", "std")
RUN_WEIGHTS = ("best.safetensors", "last.safetensors")  # a run directory's checkpoints, in order of preference
HUB_CONFIG, HUB_WEIGHTS, HUB_CARD = "config.json", "model.safetensors", "README.md"  # a hub folder's files


def is_hub_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a hub folder's files (and no run checkpoints)."""
    path = Path(path)
    return (path.is_dir() and any((path / f).exists() for f in (HUB_CONFIG, HUB_WEIGHTS))
            and not any((path / f).exists() for f in RUN_WEIGHTS))


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A run directory means its ``best.safetensors`` (else ``last.safetensors``), a hub folder its
    ``model.safetensors``; a file is itself."""
    path = Path(path)
    if path.is_dir():
        for name in RUN_WEIGHTS:
            if (path / name).is_file():
                return path / name
        if is_hub_folder(path):
            missing = [f for f in (HUB_CONFIG, HUB_WEIGHTS) if not (path / f).is_file()]
            if missing:
                raise FileNotFoundError(f"hub folder {path} lacks {' and '.join(missing)}; write it again with "
                                        "`ghostnest export RUN --format hub --out DIR`")
            return path / HUB_WEIGHTS
        raise FileNotFoundError(
            f"{path} holds no best.safetensors or last.safetensors; is it a ghostnest run directory?")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass a run directory or a .safetensors file")
    return path


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """(tensors, the raw ghostnest metadata or None) of a safetensors file; ``ValueError`` if it is unreadable."""
    from safetensors.torch import load

    try:
        tensors = load(path.read_bytes())
        raw = safetensors_metadata(path)
    except Exception as exc:  # safetensors raises its own error types for corrupt or truncated files
        raise ValueError(
            f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}: {exc}); use the run's other "
            "checkpoint (best.safetensors / last.safetensors) or train again"
        ) from None
    return tensors, raw


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, metadata) of a ghostnest checkpoint, run directory or hub folder; ``ValueError`` for a corrupt,
    truncated, mismatched or foreign file."""
    path = resolve_checkpoint_path(path)
    if path.suffix.lower() in (".onnx", ".pt2"):
        raise ValueError(f"{path} is an exported model file, not a checkpoint: pass the run directory or its "
                         ".safetensors checkpoint (an exported .onnx file goes to eval's --model-file, or to predict "
                         "in place of the checkpoint)")
    if path.name == HUB_WEIGHTS and (path.parent / HUB_CONFIG).is_file():
        return read_hub_folder(path.parent)
    tensors, raw = read_safetensors(path)
    if raw is None:
        raise ValueError(f"{path} is a safetensors file but not a ghostnest checkpoint (no '{METADATA_KEY}' metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise ValueError(
            f"checkpoint {path} has corrupt metadata; use the run's other checkpoint or train again") from None
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"checkpoint {path} metadata lacks {missing}; it was not written by ghostnest train")
    return tensors, meta


def read_hub_folder(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, checkpoint metadata) of a hub folder: ``model.safetensors`` and what its ``config.json`` says,
    each checked against the other (class count, label names, classifier shape)."""
    folder = Path(folder)
    fix = "write it again with `ghostnest export RUN --format hub --out DIR`"
    weights = resolve_checkpoint_path(folder)
    try:
        config = json.loads((folder / HUB_CONFIG).read_text())
        cfg = config["pretrained_cfg"]
        arch, n = config["architecture"], int(config["num_classes"])
        size, mean, std = int(cfg["input_size"][-1]), list(cfg["mean"]), list(cfg["std"])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{folder / HUB_CONFIG} is not valid JSON ({exc.msg}, line {exc.lineno}); {fix}") from None
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"{folder / HUB_CONFIG} is not a timm model config (no usable {exc}); {fix}") from None
    tensors, _ = read_safetensors(weights)
    head = tensors.get(f"{cfg.get('classifier') or 'fc'}.weight")
    if head is not None and head.shape[0] != n:
        raise ValueError(f"{folder}: config.json says {n} classes but model.safetensors holds a {head.shape[0]}-class "
                         f"classifier; the two files come from different models: {fix}")
    classes = [str(c) for c in config.get("label_names") or range(n)]
    if len(classes) != n:
        raise ValueError(f"{folder}: config.json names {len(classes)} labels for {n} classes; {fix}")
    model_kwargs = {k: v for k, v in (config.get("model_args") or {}).items() if k != "num_classes"}
    extra = config.get(METADATA_KEY) or {}
    meta = {"model": arch, "model_kwargs": model_kwargs, "num_classes": n, "classes": classes, "input_size": size,
            "mean": mean, "std": std, "dataset": extra.get("dataset"), "recipe": extra.get("recipe"), "hub": True}
    return tensors, meta


def load_into(model: nn.Module, tensors: dict, path, meta: dict, keep: set[str] = frozenset()) -> None:
    """``tensors`` into ``model``, every key matching, except the keys ``keep`` (left as the model has them: a new
    head); a mismatch as one ``ValueError`` line naming the checkpoint."""
    try:
        if keep:
            missing, unexpected = model.load_state_dict(tensors, strict=False)
            if unexpected or set(missing) - set(keep):
                raise RuntimeError(f"Error(s) in loading state_dict:\n    missing keys {sorted(set(missing) - set(keep))}"
                                   f"\n    unexpected keys {sorted(unexpected)}")
        else:
            model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[1:3]) or first[0]
        raise ValueError(
            f"checkpoint {path} does not fit model {meta['model']} with {meta['num_classes']} classes and options "
            f"{meta['model_kwargs']} ({detail}); it was saved from another model or class count"
        ) from None


def pretrained_overlay(path: str | Path, name: str, kwargs: dict) -> dict:
    """timm's ``pretrained_cfg_overlay`` that makes ``create_model(name, pretrained=True, ...)`` load the weights at
    ``path`` (a run directory, checkpoint, hub folder or plain ``.safetensors`` state dict), with the checkpoint's
    class count, labels and preprocessing (timm reads the weights from ``file``, after the checks here).
    ``kwargs`` (the caller's model options) gain the checkpoint's options;
    an architecture or class-count mismatch is a ``ValueError`` naming the right call."""
    path = resolve_checkpoint_path(path)
    try:
        _, meta = read_checkpoint(path)
    except ValueError:
        if path.suffix.lower() != ".safetensors":
            raise
        tensors, raw = read_safetensors(path)
        if raw is not None:
            raise
        # a plain state dict: the caller's options say the rest; the class count defaults to the classifier's
        heads = [t.shape[0] for k, t in tensors.items() if k in ("fc.weight", "classifier.weight")]
        if heads:
            kwargs.setdefault("num_classes", heads[0])
        return {"file": str(path), **({"num_classes": kwargs["num_classes"]} if "num_classes" in kwargs else {})}
    if meta["model"] != name:
        raise ValueError(f"{path} holds a {meta['model']}, not a {name}: call create_model({meta['model']!r}, "
                         f"pretrained={str(path)!r})")
    n = int(meta["num_classes"])
    if kwargs.setdefault("num_classes", n) != n:
        raise ValueError(f"{path} has {n} classes, not num_classes={kwargs['num_classes']}: leave num_classes out, "
                         "then call model.reset_classifier(K) to fine-tune a K-class head")
    for key, value in meta.get("model_kwargs", {}).items():
        kwargs.setdefault(key, value)
    size = int(meta["input_size"])
    return {"file": str(path), "num_classes": n, "label_names": tuple(meta["classes"]),
            "input_size": (3, size, size), "test_input_size": None, "mean": tuple(meta["mean"]),
            "std": tuple(meta["std"]), "crop_pct": 1.0, "interpolation": "bicubic"}
