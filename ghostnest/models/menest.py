"""ME-NeSt-Ghost S/M/L/XL: EfficientNet-V2 with MixConv, Split-Attention and Mix-GhostConv blocks.

ME-NeSt-Ghost, section 3 and Tables 1-4: the network is EfficientNet-V2 S/M/L/XL layer for layer (same depths, widths
and strides), with every Fused-MBConv block replaced by a :class:`MSBlock` (MixConv-Split-Attention, section 3.1,
Figure 1) and every MBConv block by a :class:`MSGhostBlock` (MixConv-SE-Ghost, section 3.2, Figure 4). Mish is
the activation throughout (section 5.1); a channel shuffle follows every skip connection (Figures 1 and 4).

The details the paper leaves open are fields of :class:`MENeStConfig`; docs/architecture.md says, for each, what
the paper says, what we chose and what it does to the parameter count. Every field can be overridden by name::

    ghostnest.create_model("menest_ghost_s", num_classes=100, se=False, shuffle=False, act="relu")
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from timm.layers import DropPath
from timm.models import generate_default_cfgs
from torch import nn

from ..layers import ChannelShuffle, GhostModule, MixConv2d, SplitAttention, SqueezeExcite, get_act
from ..layers.mixconv import split_channels
from ..normalization import CIFAR100_MEAN, CIFAR100_STD
from ..registry import register_model
from ._base import PooledClassifier, StagePlan, build_model, pretrained_cfg

MS = "ms"  # MixConv-Split-Attention block (section 3.1), in place of Fused-MBConv
MS_GHOST = "ms_ghost"  # MixConv-SE-Ghost block (section 3.2), in place of MBConv
BLOCK_TYPES = (MS, MS_GHOST)

# Stage tables, read off the paper's Tables 1-4 (ME-NeSt-Ghost, Tables 1-4): one row per stage after the 3x3 stem,
# (block type, layers, output channels, stride of the first layer, expansion ratio).
# Layers, channels and strides are the paper's (identical to EfficientNet-V2's). The expansion ratios are
# EfficientNet-V2's: 1 in the first stage and 4 in the next two (its Fused-MBConv ratios; in an MS block the
# MixConv expands through its channel multiplier), 4 in the first MS-Ghost stage and 6 after (its MBConv ratios).
# See docs/architecture.md, "Expansion ratios".
STAGES_S = (
    (MS, 2, 24, 1, 1),
    (MS, 4, 48, 2, 4),
    (MS, 4, 64, 2, 4),
    (MS_GHOST, 6, 128, 2, 4),
    (MS_GHOST, 9, 160, 1, 6),
    (MS_GHOST, 15, 256, 2, 6),
)  # Table 1: 10 MS blocks
STAGES_M = (
    (MS, 3, 24, 1, 1),
    (MS, 5, 48, 2, 4),
    (MS, 5, 80, 2, 4),
    (MS_GHOST, 7, 160, 2, 4),
    (MS_GHOST, 14, 176, 1, 6),
    (MS_GHOST, 18, 304, 2, 6),
    (MS_GHOST, 5, 512, 1, 6),
)  # Table 2: 13 MS blocks
STAGES_L = (
    (MS, 4, 32, 1, 1),
    (MS, 7, 64, 2, 4),
    (MS, 7, 96, 2, 4),
    (MS_GHOST, 10, 192, 2, 4),
    (MS_GHOST, 19, 224, 1, 6),
    (MS_GHOST, 25, 384, 2, 6),
    (MS_GHOST, 7, 640, 1, 6),
)  # Table 3: 18 MS blocks
STAGES_XL = (
    (MS, 4, 32, 1, 1),
    (MS, 8, 64, 2, 4),
    (MS, 8, 96, 2, 4),
    (MS_GHOST, 16, 192, 2, 4),
    (MS_GHOST, 24, 256, 1, 6),
    (MS_GHOST, 32, 512, 2, 6),
    (MS_GHOST, 8, 640, 1, 6),
)  # Table 4: 20 MS blocks


@dataclass(frozen=True)
class MENeStConfig:
    """Every architectural choice of ME-NeSt-Ghost; the defaults are the reading documented in architecture.md."""

    stages: tuple[tuple[str, int, int, int, int], ...] = STAGES_S  # (block, layers, channels, stride, expansion)
    stem_width: int = 24  # Tables 1-4: "Conv3x3, 24, stride 2" (EfficientNet-V2 L/XL use 32)
    num_features: int = 1792  # Tables 1-4: "Conv1x1 + Pooling + FC, 1792" (EfficientNet-V2 uses 1280)
    kernel_sizes: tuple[int, ...] = (3, 5, 7, 9)  # MixConv kernels, sections 3.1 and 3.2
    partition: str = "equal"  # MixConv channel partition, section 3.1.1: "equal partition was chosen"
    act: str = "mish"  # section 5.1
    # MS block (section 3.1): Split-Attention unit
    radix: int = 2  # "split attention module with radix = 2" (1 gives SE-like sigmoid gating)
    cardinality: int = 1  # "cardinality k=1"
    sa_reduction: int = 4  # attention inner width = max(channels * radix // sa_reduction, sa_min_inner) (ResNeSt)
    sa_min_inner: int = 32
    # MS-Ghost block (section 3.2): Mix-GhostConv and Squeeze-Excitation
    ghost_ratio: int = 2  # section 3.2.1: C/2 intrinsic maps + C/2 cheap maps
    se: bool = True
    se_ratio: float = 0.5625  # squeeze width = se_ratio * block input channels ("in") or expanded ("mid");
    # 9/16 of the input is calibrated to the paper's counts (docs/architecture.md, "SE squeeze width")
    se_from: str = "in"  # "in" (EfficientNet/MixNet convention) or "mid" (Hu et al.'s reduction of the gated width)
    # channel shuffle after the skip connection (Figures 1 and 4, section 5.1)
    shuffle: bool = True
    shuffle_groups: int = 4
    # regularisation, as EfficientNet-V2
    drop_rate: float = 0.2  # dropout before the classifier
    drop_path_rate: float = 0.2  # stochastic depth, rising linearly from 0 to this over the blocks


def _check_mixconv_channels(name: str, channels: int, cfg: MENeStConfig) -> None:
    """Raise a ValueError naming ``name`` when ``channels`` cannot be split over the MixConv kernel groups."""
    n = len(cfg.kernel_sizes)
    need = n if cfg.partition == "equal" else 2 ** (n - 1)
    if channels < need:
        raise ValueError(
            f"{name}={channels} is too few for a MixConv over {n} kernel sizes {tuple(cfg.kernel_sizes)} with "
            f"partition={cfg.partition!r}; {name} must be >= {need}"
        )
    split_channels(channels, n, cfg.partition)  # validates the partition name


def _check_ghost_channels(name: str, channels: int, role: str, cfg: MENeStConfig) -> None:
    """Raise a ValueError naming ``name`` when a Mix-GhostConv producing ``channels`` has too few intrinsic maps.

    The cheap MixConv of a Mix-GhostConv acts on the ``ceil(channels / ghost_ratio)`` intrinsic maps.
    """
    if not isinstance(cfg.ghost_ratio, int) or cfg.ghost_ratio < 2:
        raise ValueError(f"ghost_ratio={cfg.ghost_ratio!r} must be an integer >= 2")
    n = len(cfg.kernel_sizes)
    need = n if cfg.partition == "equal" else 2 ** (n - 1)
    intrinsic = -(-channels // cfg.ghost_ratio)
    if intrinsic < need:
        raise ValueError(
            f"{name}={channels} is too few for the {role} Mix-GhostConv: its cheap MixConv over {n} kernel sizes "
            f"{tuple(cfg.kernel_sizes)} with partition={cfg.partition!r} acts on ceil({channels} / ghost_ratio) = "
            f"{intrinsic} intrinsic channels; {name} must be >= {(need - 1) * cfg.ghost_ratio + 1}"
        )


def _check_shuffle(name: str, channels: int, cfg: MENeStConfig) -> None:
    if cfg.shuffle and (cfg.shuffle_groups < 1 or channels % cfg.shuffle_groups):
        valid = [g for g in range(1, channels + 1) if channels % g == 0]
        raise ValueError(
            f"{name}={channels} is not divisible by shuffle_groups={cfg.shuffle_groups}; valid shuffle_groups "
            f"for {channels} channels are {valid}, or pass shuffle=False"
        )


def _check_block_args(in_channels: int, out_channels: int, stride: int, expansion: int, block: str) -> None:
    """The argument checks MS and MS-Ghost blocks share (``block`` names the block in the message)."""
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"in_channels={in_channels} and out_channels={out_channels} must be >= 1")
    if stride not in (1, 2):
        raise ValueError(f"stride={stride} must be 1 or 2")
    if not isinstance(expansion, int) or expansion < 1:
        raise ValueError(f"expansion={expansion!r} must be an integer >= 1 for {block}")


class MSBlock(nn.Module):
    """MixConv-Split-Attention block (ME-NeSt-Ghost, section 3.1, Figure 1), in place of EfficientNet-V2's Fused-MBConv.

    ``MixConv(3/5/7/9, stride) -> BN -> act -> SplitAttention(radix) -> [1x1 projection + BN] -> + skip -> shuffle``

    The radix-2 branches of the SK-unit-like attention (sections 3.1, 3.1.2, Figure 3) are formed by the MixConv
    itself: it is a mixed depthwise convolution with channel multiplier ``radix * expansion``, so every branch is a
    full-width mixed depthwise convolution of the input (each channel keeps its group's kernel size in all
    branches). The Split-Attention unit pools the sum of the branches, predicts per-branch channel weights with two
    1x1 convolutions and a softmax over the radix, and returns their weighted sum. A linear 1x1 projection (+ BN)
    follows only where the channel count changes (always when ``expansion > 1``); the skip connection is the
    identity where the shapes match (with stochastic depth on the residual branch); the channel shuffle follows.

    ``attn`` replaces the Split-Attention unit (the hook ME-NeSt-Ghost-TSA uses, ``menest_tsa.py``): a module from
    the ``in_channels * expansion * cfg.radix`` channels of the MixConv's branches to ``in_channels * expansion``
    (with ``cfg.radix=1``, one branch: any width-preserving module, ``nn.Identity()`` for none).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        expansion: int = 1,
        cfg: MENeStConfig = MENeStConfig(),
        drop_path: float = 0.0,
        attn: nn.Module | None = None,
    ):
        super().__init__()
        _check_block_args(in_channels, out_channels, stride, expansion, "an MS block")
        if cfg.radix < 1:
            raise ValueError(f"radix={cfg.radix} must be >= 1")
        if cfg.cardinality != 1 and (in_channels * expansion) % cfg.cardinality:
            raise ValueError(
                f"in_channels * expansion={in_channels * expansion} must be divisible by cardinality={cfg.cardinality}"
            )
        _check_mixconv_channels("in_channels", in_channels, cfg)
        _check_shuffle("out_channels", out_channels, cfg)
        width = in_channels * expansion
        self.mixconv = MixConv2d(in_channels, cfg.kernel_sizes, stride, cfg.partition, multiplier=cfg.radix * expansion)
        self.bn1 = nn.BatchNorm2d(width * cfg.radix)
        self.act1 = get_act(cfg.act)
        # the MixConv emits channel c's radix branches next to each other (c * radix + r): channel-major input
        self.attn = attn if attn is not None else SplitAttention(
            width, cfg.radix, cfg.cardinality, cfg.sa_reduction, cfg.sa_min_inner, cfg.act, layout="channel_major")
        if width != out_channels:
            self.proj = nn.Sequential(nn.Conv2d(width, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        else:
            self.proj = nn.Identity()
        self.has_skip = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path) if drop_path > 0 and self.has_skip else nn.Identity()
        self.shuffle = ChannelShuffle(out_channels, cfg.shuffle_groups) if cfg.shuffle else nn.Identity()

    def fuse_pairs(self) -> list[tuple[str, str]]:
        """(conv, BN) children that :func:`ghostnest.fuse` folds (``proj`` and ``attn`` declare their own)."""
        return [("mixconv", "bn1")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.proj(self.attn(self.act1(self.bn1(self.mixconv(x)))))
        if self.has_skip:
            out = self.drop_path(out) + x
        return self.shuffle(out)


class MSGhostBlock(nn.Module):
    """MixConv-SE-Ghost block (ME-NeSt-Ghost, section 3.2, Figure 4), in place of EfficientNet-V2's MBConv.

    ``Mix-GhostConv (expand) -> MixConv(3/5/7/9, stride) -> BN -> act -> SE -> Mix-GhostConv (project, linear)
    -> + skip -> shuffle``

    Both 1x1 convolutions of MBConv are Mix-GhostConvs (section 3.2.1, Figure 6): a 1x1 primary convolution to half
    the channels and a MixConv 3/5/7/9 cheap operation to the other half, concatenated (:class:`GhostModule` with a
    sequence ``cheap_kernel``). The expanding one has BN + activation on both halves, the projecting one BN only
    (linear, as MBConv's projection). The 3x3 depthwise convolution is a MixConv (section 3.2) carrying the stride.
    Squeeze-Excitation (section 3.2.2) gates the expanded channels; its squeeze width is ``se_ratio`` times the
    block's input channels (``se_from="in"``) or its expanded channels (``se_from="mid"``). Identity skip with
    stochastic depth where the shapes match; channel shuffle after the skip.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        expansion: int = 4,
        cfg: MENeStConfig = MENeStConfig(),
        drop_path: float = 0.0,
    ):
        super().__init__()
        _check_block_args(in_channels, out_channels, stride, expansion, "an MS-Ghost block")
        mid = in_channels * expansion
        ratio = cfg.ghost_ratio
        _check_ghost_channels("in_channels * expansion", mid, "expanding", cfg)
        _check_ghost_channels("out_channels", out_channels, "projecting", cfg)
        _check_mixconv_channels("in_channels * expansion", mid, cfg)  # the depthwise MixConv
        _check_shuffle("out_channels", out_channels, cfg)
        ghost = dict(kernel_size=1, ratio=ratio, cheap_kernel=tuple(cfg.kernel_sizes), partition=cfg.partition)
        self.ghost_expand = GhostModule(in_channels, mid, act=cfg.act, **ghost)
        self.mixconv = MixConv2d(mid, cfg.kernel_sizes, stride, cfg.partition)
        self.bn = nn.BatchNorm2d(mid)
        self.act = get_act(cfg.act)
        if cfg.se:
            if cfg.se_from not in ("in", "mid"):
                raise ValueError(f"se_from={cfg.se_from!r} must be 'in' or 'mid'")
            if cfg.se_ratio <= 0:
                raise ValueError(f"se_ratio={cfg.se_ratio} must be > 0")
            base = in_channels if cfg.se_from == "in" else mid
            self.se = SqueezeExcite(mid, squeeze_channels=max(1, int(base * cfg.se_ratio)), act=cfg.act)
        else:
            self.se = nn.Identity()
        self.ghost_project = GhostModule(mid, out_channels, act=None, **ghost)
        self.has_skip = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path) if drop_path > 0 and self.has_skip else nn.Identity()
        self.shuffle = ChannelShuffle(out_channels, cfg.shuffle_groups) if cfg.shuffle else nn.Identity()

    def fuse_pairs(self) -> list[tuple[str, str]]:
        """(conv, BN) children that :func:`ghostnest.fuse` folds (the Ghost modules hold theirs in Sequentials)."""
        return [("mixconv", "bn")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ghost_expand(x)
        out = self.se(self.act(self.bn(self.mixconv(out))))
        out = self.ghost_project(out)
        if self.has_skip:
            out = self.drop_path(out) + x
        return self.shuffle(out)


class MENeStGhost(PooledClassifier):
    """ME-NeSt-Ghost (ME-NeSt-Ghost, Tables 1-4): 3x3 stem, MS and MS-Ghost stages, 1x1 head conv, pool, dropout, FC.

    ``forward_features`` ends after the head convolution (+ BN + act), as in timm's EfficientNet; ``forward_head``
    pools, applies dropout and the classifier. Every convolution is "same"-padded, so any input size runs (odd sizes
    round up at each stride 2); :meth:`check_input` asks for at least the final reduction (32 x 32 for S-XL, the
    last map 1 x 1), where every feature level has exactly the size its reduction says.
    """

    family_name = "ME-NeSt-Ghost"

    def __init__(self, num_classes: int = 100, in_chans: int = 3, cfg: MENeStConfig = MENeStConfig(),
                 global_pool: str = "avg"):
        super().__init__()
        self.stage_plan(cfg)  # checks the stage table
        if not 0.0 <= cfg.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate={cfg.drop_path_rate} must be in [0, 1)")
        if cfg.stem_width < 1 or cfg.num_features < 1:
            raise ValueError(f"stem_width={cfg.stem_width} and num_features={cfg.num_features} must be >= 1")
        self.cfg = cfg
        self.stem = self.make_stem(in_chans, cfg)
        total = sum(row[1] for row in cfg.stages)
        stages, in_ch, idx = [], cfg.stem_width, 0
        for row, (block_type, layers, channels, stride, expansion) in enumerate(cfg.stages):
            blocks = []
            for i in range(layers):
                dpr = cfg.drop_path_rate * idx / total  # EfficientNet's linear rule: 0 for the first block
                blocks.append(self.make_block(row, block_type, in_ch, channels, stride if i == 0 else 1, expansion,
                                              cfg, dpr))
                in_ch, idx = channels, idx + 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.Conv2d(in_ch, cfg.num_features, 1, bias=False), nn.BatchNorm2d(cfg.num_features), get_act(cfg.act)
        )
        self.init_classifier(cfg, num_classes, in_chans, cfg.num_features, cfg.drop_rate, global_pool)
        self._init_weights()

    @classmethod
    def stage_plan(cls, cfg: MENeStConfig) -> StagePlan:
        if not cfg.stages:
            raise ValueError("stages must hold at least one row (block, layers, channels, stride, expansion)")
        for row in cfg.stages:
            if len(row) != 5 or row[0] not in BLOCK_TYPES or min(row[1:]) < 1:
                raise ValueError(
                    f"stage row {row!r} must be (block, layers, channels, stride, expansion) with block in "
                    f"{BLOCK_TYPES} and positive integers"
                )
        return StagePlan(cfg.stem_width, 2, tuple(r[2] for r in cfg.stages), tuple(r[3] for r in cfg.stages))

    def make_stem(self, in_chans: int, cfg: MENeStConfig) -> nn.Sequential:
        """Tables 1-4's stem: 3x3 convolution, stride 2, + BN + act (a variant's layout may extend it)."""
        return nn.Sequential(
            nn.Conv2d(in_chans, cfg.stem_width, 3, 2, 1, bias=False), nn.BatchNorm2d(cfg.stem_width), get_act(cfg.act)
        )

    def make_block(self, row: int, block_type: str, in_channels: int, out_channels: int, stride: int, expansion: int,
                   cfg: MENeStConfig, drop_path: float) -> nn.Module:
        """One block of stage row ``row`` of the stage table: an MS or MS-Ghost block (a variant may build others)."""
        block_cls = MSBlock if block_type == MS else MSGhostBlock
        return block_cls(in_channels, out_channels, stride, expansion, cfg, drop_path)

    def _init_weights(self) -> None:
        """EfficientNet's initialisation: He-normal (fan-out) convolutions, unit BN, uniform classifier."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / m.weight.shape[0] ** 0.5
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)


def normalise_option(key: str, value):
    """An option as a config field holds it (hashable, frozen), from the lists YAML and ``--set`` give: the stage
    table's rows as ``(block, ints...)`` tuples, any other sequence (the kernel sizes, a variant's stage indices) as
    a tuple of ints."""
    if not isinstance(value, Sequence) or isinstance(value, str):
        return value
    if key == "stages":
        return tuple((str(r[0]), *(int(v) for v in r[1:])) for r in value)
    return tuple(int(v) for v in value)


def _build(variant: str, overrides: dict, pretrained: bool, kwargs: dict) -> MENeStGhost:
    # timm's factory spells drop_rate / drop_path_rate the same way, so they pass straight through
    return build_model(MENeStGhost, MENeStConfig, variant, overrides, pretrained, kwargs, normalise_option)


PAPER = ("Mixconv-EfficientNeSt-Ghost (ME-NeSt-Ghost): Using a combination of mixed depthwise convolutions, "
         "Split-Attention units and Ghost convolutions for improving EfficientNet-V2 performance")


def menest_default_cfgs(*names: str) -> dict:
    """timm's pretrained cfgs of ME-NeSt-Ghost models (this family and its section-6 variants), read by
    timm.models.register_model from each module's ``default_cfgs``: CIFAR-100 at 128 x 128 (section 2; the final
    map is 4 x 4), the recipe's normalisation, no weights published."""
    return generate_default_cfgs({name: pretrained_cfg(128, 32, 4, CIFAR100_MEAN, CIFAR100_STD, 100, PAPER)
                                  for name in names})


default_cfgs = menest_default_cfgs("menest_ghost_s", "menest_ghost_m", "menest_ghost_l", "menest_ghost_xl")


@register_model("menest", paper_params_m=21)
def menest_ghost_s(pretrained: bool = False, **kwargs) -> MENeStGhost:
    """ME-NeSt-Ghost-S (ME-NeSt-Ghost, Table 1): EfficientNet-V2-S layout, 10 MS blocks then 30 MS-Ghost blocks."""
    return _build("menest_ghost_s", dict(stages=STAGES_S, stem_width=24, drop_rate=0.2), pretrained, kwargs)


@register_model("menest", paper_params_m=51)
def menest_ghost_m(pretrained: bool = False, **kwargs) -> MENeStGhost:
    """ME-NeSt-Ghost-M (ME-NeSt-Ghost, Table 2): EfficientNet-V2-M layout, 13 MS blocks then 44 MS-Ghost blocks."""
    return _build("menest_ghost_m", dict(stages=STAGES_M, stem_width=24, drop_rate=0.3), pretrained, kwargs)


@register_model("menest", paper_params_m=102)
def menest_ghost_l(pretrained: bool = False, **kwargs) -> MENeStGhost:
    """ME-NeSt-Ghost-L (ME-NeSt-Ghost, Table 3): EfficientNet-V2-L layout, 18 MS blocks then 61 MS-Ghost blocks."""
    return _build("menest_ghost_l", dict(stages=STAGES_L, stem_width=24, drop_rate=0.4), pretrained, kwargs)


@register_model("menest", paper_params_m=172)
def menest_ghost_xl(pretrained: bool = False, **kwargs) -> MENeStGhost:
    """ME-NeSt-Ghost-XL (ME-NeSt-Ghost, Table 4): EfficientNet-V2-XL layout, 20 MS blocks then 80 MS-Ghost blocks."""
    return _build("menest_ghost_xl", dict(stages=STAGES_XL, stem_width=24, drop_rate=0.4), pretrained, kwargs)
