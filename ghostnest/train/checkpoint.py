"""Checkpoints: weights as safetensors (with everything needed to rebuild and feed the model in its metadata),
optimizer/scheduler/RNG/epoch state in a torch file beside them. Every write is atomic (temp file, fsync,
``os.replace``: :func:`ghostnest.fileio.atomic_path`, the one helper all writers share); a crash leaves the
previous file whole.

Run-directory files written here: ``last.safetensors`` + ``last.state.pt`` (after every epoch) and
``best.safetensors`` (best validation top-1 so far).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..fileio import atomic_path
from ..modelfile import METADATA_KEY, safetensors_metadata

FORMAT = 1
REQUIRED_META = ("model", "model_kwargs", "num_classes", "classes", "input_size", "mean", "std")


def save_weights(path: str | Path, model: nn.Module, meta: dict) -> None:
    """Model weights + ``meta`` (model name/kwargs, classes, input size, mean/std, ...) as one safetensors file."""
    from safetensors.torch import save_file

    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"checkpoint metadata lacks {missing}")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps({"format": FORMAT, **meta})})


def save_state(path: str | Path, state: dict) -> None:
    """Optimizer, scheduler, RNG, epoch/step and (since resumes read it alone) the model weights, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # through Python's file: an OSError says what failed
        torch.save(state, f)


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A run directory means its ``best.safetensors`` (else ``last.safetensors``); a file is itself."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(
            f"{path} holds no best.safetensors or last.safetensors; is it a ghostnest run directory?")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass a run directory or a .safetensors file")
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, metadata) of a weights file; ``ValueError`` for a corrupt, truncated or foreign file."""
    from safetensors.torch import load

    path = resolve_checkpoint_path(path)
    if path.suffix.lower() in (".onnx", ".pt2"):
        raise ValueError(f"{path} is an exported model file, not a checkpoint: pass the run directory or its "
                         ".safetensors checkpoint (an exported .onnx file goes to eval's --model-file, or to predict "
                         "in place of the checkpoint)")
    data = path.read_bytes()
    try:
        tensors = load(data)
        raw = safetensors_metadata(path)
    except Exception as exc:
        raise ValueError(
            f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}: {exc}); use the run's other "
            "checkpoint (best.safetensors / last.safetensors) or train again"
        ) from None
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


def build_from_meta(meta: dict) -> nn.Module:
    """The (untrained) network that checkpoint or export metadata ``meta`` describes."""
    from ..registry import create_model

    return create_model(meta["model"], num_classes=int(meta["num_classes"]), **meta.get("model_kwargs", {}))


def load_into(model: nn.Module, tensors: dict, path, meta: dict, keep: set[str] = frozenset()) -> None:
    """``tensors`` into ``model``, every key matching, except the keys ``keep`` (left as the model has them);
    ``ValueError`` naming the checkpoint when they do not fit."""
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


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load a ghostnest checkpoint (a ``.safetensors`` file or a run directory) -> ``(model in eval mode, meta)``.

    ``meta`` holds ``model``, ``model_kwargs``, ``num_classes``, ``classes`` (names), ``input_size``, ``mean``,
    ``std`` and ``dataset``: everything needed to preprocess an image the way the model was trained.

    >>> model, meta = ghostnest.load_checkpoint("runs/quickstart-20260101-000000")  # doctest: +SKIP
    """
    path = resolve_checkpoint_path(path)
    tensors, meta = read_checkpoint(path)
    model = build_from_meta(meta)
    load_into(model, tensors, path, meta)
    return model.to(device).eval(), meta
