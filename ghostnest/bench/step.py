"""What one timed step is: a model put in the state the benchmark times, and the step function that runs it.

- ``mode="infer"``: ``model.eval()`` and ``torch.inference_mode()``, one forward pass of a batch.
- ``mode="train"``: one full optimizer step: forward, cross-entropy loss against random labels, backward and an
  ``AdamW`` step (``zero_grad(set_to_none=True)`` first), the model in train mode (BatchNorm and dropout active).

A ``bf16``/``fp16`` torch dtype runs the step under ``torch.autocast`` (weights stay fp32, as in mixed-precision
training; fp16 training on CUDA uses a ``GradScaler``). On CUDA each step ends with a synchronize, so that its
wall-clock time is the GPU's time.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..fuse import fuse as fuse_model


def prepare_model(model: nn.Module, mode: str, fuse: bool = False) -> nn.Module:
    """Put ``model`` in the state the benchmark times: eval or train mode, and optionally the fused fast path.

    With ``fuse`` (infer mode only) the model is replaced by ``ghostnest.fuse(model)``, an eval-only fused copy
    (the CLI's default in infer mode; ``--no-fuse`` turns it off). Fusion never applies to train mode.
    """
    model.train(mode == "train")
    if fuse:
        if mode != "infer":
            raise ValueError("fusion applies to inference only; drop --fuse for --mode train")
        model = fuse_model(model)
    return model


def device_sync(device: torch.device) -> Callable[[], None]:
    """A function that waits for ``device`` to finish its queued work (nothing to wait for on the CPU)."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def make_step(
    model: nn.Module,
    mode: str,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    tdtype: torch.dtype,
) -> Callable[[], None]:
    """The timed step of ``model`` on batch ``x`` (labels ``y`` in train mode), synchronised with ``device``."""
    amp = (
        torch.autocast(device.type, dtype=tdtype)
        if tdtype is not torch.float32
        else contextlib.nullcontext()
    )
    sync = device_sync(device)

    if mode == "infer":

        def infer_step() -> None:
            with torch.inference_mode(), amp:
                model(x)
            sync()

        return infer_step

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
    scaler = torch.amp.GradScaler(device.type) if (tdtype is torch.float16 and device.type == "cuda") else None

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = F.cross_entropy(model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        sync()

    return train_step
