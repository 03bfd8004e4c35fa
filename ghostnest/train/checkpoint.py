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
from ..modelfile import METADATA_KEY
from ..weights import (  # noqa: F401  (reading lives below training: ghostnest.weights)
    REQUIRED_META,
    load_into,
    read_checkpoint,
    resolve_checkpoint_path,
)

FORMAT = 1


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


def build_from_meta(meta: dict) -> nn.Module:
    """The (untrained) network that checkpoint or export metadata ``meta`` describes."""
    from ..registry import create_model

    return create_model(meta["model"], num_classes=int(meta["num_classes"]), **meta.get("model_kwargs", {}))


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load a ghostnest checkpoint (a ``.safetensors`` file, a run directory or a hub folder written by
    ``ghostnest export RUN --format hub``) -> ``(model in eval mode, meta)``.

    ``meta`` holds ``model``, ``model_kwargs``, ``num_classes``, ``classes`` (names), ``input_size``, ``mean``,
    ``std`` and ``dataset``: everything needed to preprocess an image the way the model was trained.

    >>> model, meta = ghostnest.load_checkpoint("runs/quickstart-20260101-000000")  # doctest: +SKIP
    """
    path = resolve_checkpoint_path(path)
    tensors, meta = read_checkpoint(path)
    model = build_from_meta(meta)
    load_into(model, tensors, path, meta)
    return model.to(device).eval(), meta
