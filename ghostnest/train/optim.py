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
    """AdamW (GhostMixNet, "Final Training Setup") or Nesterov SGD (ME-NeSt-Ghost, section 4); with ``layer_decay``,
    the same optimizer built by timm's factory over the model's layers (:func:`layer_decay_optimizer`)."""
    if cfg.layer_decay is not None:
        return layer_decay_optimizer(cfg, model)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=True)


def layer_decay_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """timm's ``create_optimizer_v2(layer_decay=...)``: one parameter group per layer of the model's
    ``group_matcher()`` (the stem first, the classifier last), the layer ``i`` of ``n`` at ``layer_decay ** (n - 1 -
    i)`` times ``lr``, and (timm's grouping) no weight decay on biases and norm weights. timm's own schedulers apply
    each group's ``lr_scale`` at every update; ours are torch's, which scale from each group's starting rate, so the
    groups start at ``lr * lr_scale``. ``ValueError`` for a model without ``group_matcher``."""
    from timm.optim import create_optimizer_v2

    if not callable(getattr(model, "group_matcher", None)):
        raise ValueError(f"layer_decay={cfg.layer_decay}: {cfg.model} has no group_matcher() (timm's model interface) "
                         "to tell its layers apart; drop --set layer_decay for this model")
    extra = {"betas": tuple(cfg.betas)} if cfg.optimizer == "adamw" else {"momentum": cfg.momentum}  # timm's sgd
    opt = create_optimizer_v2(model, opt=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                              layer_decay=cfg.layer_decay, **extra)  # is Nesterov, as ours
    for group in opt.param_groups:
        group["lr"] = cfg.lr * group.get("lr_scale", 1.0)
    return opt


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


# --- per-step learning rate (warmup) and gradient clipping -----------------------------------------------------------
def warmup_factor(cfg: TrainConfig, update: int, updates_per_epoch: int) -> float:
    """The factor on the scheduled learning rate at optimizer step ``update`` (counted from 0 over the whole run):
    a straight line from ``warmup_lr / lr`` to 1 over the first ``warmup_epochs`` epochs (stepped per optimizer step,
    as timm's schedulers with ``warmup_t`` in updates), 1 afterwards."""
    total = cfg.warmup_epochs * updates_per_epoch
    if update >= total:
        return 1.0
    start = cfg.warmup_lr / cfg.lr
    return start + (1.0 - start) * update / total


def set_step_lr(opt: torch.optim.Optimizer, sched, factor: float) -> None:
    """Each group at its scheduled rate times ``factor``. With ``factor`` 1 this restores the scheduled rates, which
    torch's schedulers read back (their chained formulas start from the group's current rate) when stepped."""
    for group, lr in zip(opt.param_groups, sched.get_last_lr(), strict=True):
        group["lr"] = lr * factor


def clip_gradients(cfg: TrainConfig, model: torch.nn.Module, opt: torch.optim.Optimizer, scaler) -> None:
    """timm's ``dispatch_clip_grad`` with ``clip_grad`` / ``clip_mode`` on the true gradients: the grad scaler
    unscales them first (a no-op without fp16). ``agc`` leaves the classifier out, as timm's train.py does."""
    from timm.models import model_parameters
    from timm.utils import dispatch_clip_grad

    scaler.unscale_(opt)
    dispatch_clip_grad(model_parameters(model, exclude_head=cfg.clip_mode == "agc"), cfg.clip_grad,
                       mode=cfg.clip_mode)
