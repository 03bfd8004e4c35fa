"""Optimizer, learning-rate schedule, mixed precision and loss of a recipe."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .config import TrainConfig


def autocast_for(cfg: TrainConfig, device: torch.device):
    """(context-manager factory, dtype): bf16 (or fp16) autocast on CUDA; full fp32 (and ``None``) on CPU."""
    if device.type != "cuda" or cfg.amp == "fp32":
        return contextlib.nullcontext, None
    dtype = torch.float16 if cfg.amp == "fp16" or (cfg.amp == "auto" and not torch.cuda.is_bf16_supported()) \
        else torch.bfloat16
    return (lambda: torch.autocast("cuda", dtype=dtype)), dtype


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW (GhostMixNet, "Final Training Setup") or Nesterov SGD (ME-NeSt-Ghost, section 4)."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=True)


def build_scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer):
    """Stepped once per epoch. ``cosine``: CosineAnnealingLR(T_max=epochs, eta_min) (ME-NeSt-Ghost, section 4);
    ``cosine_restarts``: CosineAnnealingWarmRestarts(T_0, T_mult, eta_min) (GhostMixNet, "Final Training Setup";
    the published code's values are in docs/reference.md)."""
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs, eta_min=cfg.eta_min)
    if cfg.scheduler == "cosine_restarts":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            opt, T_0=cfg.restart_epochs, T_mult=cfg.restart_mult, eta_min=cfg.eta_min)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def loss_fn(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Label-smoothing cross entropy; ``target`` is class indices or (mixed) class probabilities."""
    return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
