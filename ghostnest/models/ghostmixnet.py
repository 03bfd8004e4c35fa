"""GhostMixNet (the *GhostMixNet* paper) and its ablation baselines, from one configurable network.

*GhostMixNet*, "Methodology" and "Residual Layers", Figure 1: a 3-stage ResNet whose residual blocks are
GhostModule -> BN -> ReLU -> GhostModule -> BN -> Squeeze-Excitation -> + shortcut -> ReLU. The published code's
details (docs/reference.md) are reproduced exactly: a 3x3 *primary* convolution in every Ghost module, each module's own
BN before the block's BN, SE squeezing to ``out // 16``, a 2x2 average pool before a 1024-wide dropout + linear
head. ``ghostmixnet`` has exactly 3,041,466 parameters at 10 classes.

The ablation rows of the paper's results table ("ResNet", "ResNet+SE") are the same network with plain 3x3
convolutions in place of the Ghost modules (``ghost=False``) and with or without SE; see docs/architecture.md for
the depths chosen to match their reported sizes.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from timm.models import generate_default_cfgs

from ..layers import GhostModule, SqueezeExcite, get_act
from ..normalization import CIFAR10_MEAN, CIFAR10_STD
from ..registry import register_model
from ._base import PooledClassifier, StagePlan, build_model, pretrained_cfg


@dataclass(frozen=True)
class GhostMixNetConfig:
    """The architecture table of GhostMixNet (*GhostMixNet*, Figure 1): one row per stage."""

    depths: tuple[int, ...] = (4, 4, 4)  # residual blocks per stage
    widths: tuple[int, ...] = (64, 128, 256)  # output channels per stage
    strides: tuple[int, ...] = (1, 2, 2)  # stride of each stage's first block
    stem_width: int = 64
    ghost: bool = True  # Ghost modules (True) or plain 3x3 convolutions (False, the "ResNet" ablation rows)
    ghost_ratio: int = 2
    ghost_kernel: int = 3  # primary convolution kernel of each Ghost module (3 in the published code)
    cheap_kernel: int = 3  # depthwise kernel of the cheap operation
    se: bool = True
    se_reduction: int = 16
    act: str = "relu"
    pool_size: int = 2  # adaptive average pool to pool_size x pool_size before the classifier
    drop_rate: float = 0.2


class GhostBlock(nn.Module):
    """Residual block of GhostMixNet (*GhostMixNet*, "Residual Layers"; published GhostBlock).

    ``conv1 -> BN -> act -> conv2 -> BN -> SE -> + shortcut -> act``, where ``conv1``/``conv2`` are
    :class:`GhostModule` s (``conv1`` with its own activation, ``conv2`` linear) or, with ``ghost=False``, plain
    3x3 convolutions (a ResNet BasicBlock, the paper's ablation baseline). The shortcut is the identity, or a
    strided 1x1 convolution + BN where the shape changes.
    """

    __jit_unused_properties__ = ["fuse_keeps"]  # fuse's bookkeeping, not TorchScript's

    def __init__(self, in_channels: int, out_channels: int, stride: int, cfg: GhostMixNetConfig):
        super().__init__()
        if cfg.ghost:
            common = dict(kernel_size=cfg.ghost_kernel, ratio=cfg.ghost_ratio, cheap_kernel=cfg.cheap_kernel)
            self.conv1 = GhostModule(in_channels, out_channels, stride=stride, act=cfg.act, **common)
            self.conv2 = GhostModule(out_channels, out_channels, act=None, **common)
        else:
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = get_act(cfg.act)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.se = SqueezeExcite(out_channels, cfg.se_reduction) if cfg.se else nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        else:
            self.shortcut = nn.Identity()
        self.act2 = get_act(cfg.act)

    def fuse_pairs(self) -> list[tuple[str, str]]:
        """(conv, BN) children that :func:`ghostnest.fuse` folds. ``bn1`` after an activated Ghost module follows its
        ReLU, not a convolution, and stays (:attr:`fuse_keeps`)."""
        return [("conv2", "bn2")] if self.fuse_keeps else [("conv1", "bn1"), ("conv2", "bn2")]

    @property
    def fuse_keeps(self) -> tuple[str, ...]:
        return ("bn1",) if isinstance(self.conv1, GhostModule) else ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.act2(out + self.shortcut(x))


class GhostMixNet(PooledClassifier):
    """GhostMixNet (*GhostMixNet*, Figure 1): stem, three stages of :class:`GhostBlock`, pooled dropout-linear head.

    Takes inputs of at least 4 x 4 pixels per pooled cell (32 x 32 for the default 2x2 pool and strides;
    :meth:`check_input`) and any class count (0: a headless feature model). The head pools adaptively to
    ``pool_size`` x ``pool_size``, which at 32 x 32 input equals the published ``AvgPool2d(4)`` on the 8 x 8 final
    map; there is no head convolution (``head`` is the identity).
    """

    family_name = "GhostMixNet"

    def __init__(self, num_classes: int = 10, in_chans: int = 3, cfg: GhostMixNetConfig = GhostMixNetConfig(),
                 global_pool: str = "avg"):
        super().__init__()
        if not (len(cfg.depths) == len(cfg.widths) == len(cfg.strides)):
            raise ValueError(
                f"depths={cfg.depths}, widths={cfg.widths} and strides={cfg.strides} must have one entry per stage"
            )
        if min(cfg.depths) < 1 or min(cfg.widths) < 1 or min(cfg.strides) < 1:
            raise ValueError("every stage needs depth >= 1, width >= 1 and stride >= 1")
        self.cfg = cfg
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, cfg.stem_width, 3, 1, 1, bias=False), nn.BatchNorm2d(cfg.stem_width), get_act(cfg.act)
        )
        stages, in_ch = [], cfg.stem_width
        for depth, width, stride in zip(cfg.depths, cfg.widths, cfg.strides, strict=True):
            blocks = []
            for i in range(depth):
                blocks.append(GhostBlock(in_ch, width, stride if i == 0 else 1, cfg))
                in_ch = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Identity()
        self.init_classifier(cfg, num_classes, in_chans, in_ch, cfg.drop_rate, global_pool, cfg.pool_size)

    @classmethod
    def stage_plan(cls, cfg: GhostMixNetConfig) -> StagePlan:
        return StagePlan(cfg.stem_width, 1, tuple(cfg.widths), tuple(cfg.strides))

    @classmethod
    def min_input_for(cls, cfg: GhostMixNetConfig) -> int:
        """4 x 4 pixels per pooled cell at least, as the published 32x32 -> 8x8 -> 2x2."""
        smallest = cfg.pool_size * 4
        for s in cfg.strides:
            smallest *= s
        return smallest


def _normalise(key: str, value):
    if key in ("depths", "widths", "strides") and isinstance(value, Sequence):
        return tuple(int(v) for v in value)
    return value


def _build(variant: str, overrides: dict, pretrained: bool, kwargs: dict) -> GhostMixNet:
    return build_model(GhostMixNet, GhostMixNetConfig, variant, overrides, pretrained, kwargs, _normalise)


def _cfg(**kwargs) -> dict:
    return pretrained_cfg(32, 32, 8, CIFAR10_MEAN, CIFAR10_STD, 10, PAPER, origin_url=CODE, **kwargs)


PAPER = "GhostMixNet: More Features, Less Complexity"
CODE = "https://github.com/NYUNeuroNinjas/GhostMixNet"  # the published implementation (docs/reference.md)
# timm's pretrained cfgs, read by timm.models.register_model: CIFAR-10 at 32 x 32 (the final map is 8 x 8), the
# recipes' normalisation, no weights published
default_cfgs = generate_default_cfgs({
    "ghostmixnet": _cfg(),
    "ghostmixnet_resnet": _cfg(),
    "ghostmixnet_resnet_se": _cfg(),
})


@register_model("ghostmixnet", paper_params_m=3.0)
def ghostmixnet(pretrained: bool = False, **kwargs) -> GhostMixNet:
    """GhostMixNet as published (*GhostMixNet*, Figure 1): Ghost modules + SE, [4, 4, 4] blocks of 64/128/256 channels."""
    return _build("ghostmixnet", {}, pretrained, kwargs)


@register_model("ghostmixnet", paper_params_m=4.6)
def ghostmixnet_resnet(pretrained: bool = False, **kwargs) -> GhostMixNet:
    """Ablation row "ResNet" (*GhostMixNet* results table): plain 3x3 residual blocks, no SE, [4, 4, 3] blocks."""
    return _build("ghostmixnet_resnet", dict(ghost=False, se=False, depths=(4, 4, 3)), pretrained, kwargs)


@register_model("ghostmixnet", paper_params_m=4.9)
def ghostmixnet_resnet_se(pretrained: bool = False, **kwargs) -> GhostMixNet:
    """Ablation row "ResNet+SE" (*GhostMixNet* results table): plain 3x3 residual blocks with SE, [4, 4, 3] blocks."""
    return _build("ghostmixnet_resnet_se", dict(ghost=False, se=True, depths=(4, 4, 3)), pretrained, kwargs)
