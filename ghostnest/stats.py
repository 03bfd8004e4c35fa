"""Model statistics: parameters and FLOPs, counted with PyTorch's own tools.

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode`, which counts a multiply-add as 2 FLOPs (so a
model's "GFLOPs" here is twice its GMACs, the figure many papers print). Models are built and run on the ``meta``
device, so even the 200M-parameter models are counted in a second without allocating their weights.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .registry import create_model, model_info


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size: int, in_chans: int = 3) -> int:
    """FLOPs of one eval-mode forward pass of a single ``in_chans x input_size x input_size`` image."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, in_chans, input_size, input_size, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def model_stats(name: str, num_classes: int | None = None, input_size: int | None = None) -> dict:
    """``name``, ``params``, ``gflops`` (per image) and ``input_size`` of a registered model, counted on ``meta``.

    ``num_classes`` and ``input_size`` default to the model's paper setting (e.g. 10 classes at 32 x 32 for
    GhostMixNet, 100 classes at 128 x 128 for ME-NeSt-Ghost and EfficientNet-V2).
    """
    info = model_info(name)
    size = input_size or info.input_size
    num_classes = num_classes or info.num_classes
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes)
    return {
        "name": name,
        "family": info.family,
        "params": count_params(model),
        "paper_params_m": info.paper_params_m,
        "num_classes": num_classes,
        "gflops": count_flops(model, size) / 1e9,
        "input_size": size,
    }
