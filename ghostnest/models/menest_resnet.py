"""ResNet-style ME-NeSt-Ghost: the MS and MS-Ghost blocks in the four stages of a ResNet.

The ME-NeSt-Ghost paper's Conclusion (section 6): "build the ME-NeSt-Ghost in a ResNet-like fashion with the
MixConv-Split-Attention Block and the MixConv-SE-Ghost Block being utilised in the 4 stages of a ResNet model
architecture, which in effect would question the effectiveness of the compound scaling techniques of the
EfficientNet-V2". So the blocks stay ME-NeSt-Ghost's (``MSBlock``, ``MSGhostBlock`` from ``menest.py``, every
option of :class:`~ghostnest.models.menest.MENeStConfig` with it) and the layout becomes ResNet's (He et al. 2016):

- four stages at output strides 4, 8, 16 and 32: a 3x3 max-pool (stride 2) after the stride-2 stem convolution,
  then stages of strides 1, 2, 2, 2;
- ResNet's depths: 3-4-6-3 (ResNet-50) for ``menest_ghost_resnet_s``, 3-8-36-3 (ResNet-152) for ``_m``; ResNet
  scales by depth alone, so both sizes have the same widths;
- widths doubling from stage to stage, as ResNet's; the base width (76) is the one calibrated number: it puts S
  within 2% of ME-NeSt-Ghost-S and M within 0.5% of ME-NeSt-Ghost-M (docs/architecture.md);
- MS blocks in the first two (high-resolution) stages and MS-Ghost blocks in the last two, as ME-NeSt-Ghost puts
  MS blocks first; expansion ratios ME-NeSt-Ghost's (EfficientNet-V2's): 1 then 4 in the MS stages, 4 then 6 in the
  MS-Ghost stages;
- stem width 64 (ResNet's); the head stays ME-NeSt-Ghost's (1x1 convolution to 1792, pool, dropout, FC).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from ..registry import register_model
from ._base import StagePlan, build_model
from .menest import MS, MS_GHOST, MENeStConfig, MENeStGhost, menest_default_cfgs, normalise_option

# Stage tables, one row per ResNet stage: (block type, layers, output channels, stride of the first layer, expansion
# ratio), the format of menest.py's STAGES_S..XL.
WIDTH = 76  # stage 1's channels; doubled per stage
STAGES_RESNET_S = (
    (MS, 3, WIDTH, 1, 1),
    (MS, 4, 2 * WIDTH, 2, 4),
    (MS_GHOST, 6, 4 * WIDTH, 2, 4),
    (MS_GHOST, 3, 8 * WIDTH, 2, 6),
)  # ResNet-50's depths: 16 blocks, 7 of them MS blocks
STAGES_RESNET_M = (
    (MS, 3, WIDTH, 1, 1),
    (MS, 8, 2 * WIDTH, 2, 4),
    (MS_GHOST, 36, 4 * WIDTH, 2, 4),
    (MS_GHOST, 3, 8 * WIDTH, 2, 6),
)  # ResNet-152's depths: 50 blocks, 11 of them MS blocks


@dataclass(frozen=True)
class MENeStResNetConfig(MENeStConfig):
    """ME-NeSt-Ghost's options plus ResNet's stem max-pool."""

    stem_pool: bool = True  # 3x3 max-pool, stride 2, after the stem convolution (ResNet's), for output stride 32


class MENeStResNet(MENeStGhost):
    """ResNet-style ME-NeSt-Ghost: stem (3x3 conv stride 2, BN, Mish, 3x3 max-pool stride 2), four stages of MS and
    MS-Ghost blocks, 1x1 head conv, pool, dropout, FC.

    Built as :class:`~ghostnest.models.menest.MENeStGhost` from the stage table (its blocks, stochastic-depth rule,
    checks and initialisation), with the max-pool appended to its stem: the stem's reduction is 4, and the first
    feature level is the first stage's (stride 1), as in ResNet.
    """

    family_name = "ResNet-style ME-NeSt-Ghost"

    def __init__(self, num_classes: int = 100, in_chans: int = 3, cfg: MENeStResNetConfig = MENeStResNetConfig(),
                 global_pool: str = "avg"):
        super().__init__(num_classes, in_chans, cfg, global_pool)

    @classmethod
    def stage_plan(cls, cfg: MENeStResNetConfig) -> StagePlan:
        return replace(super().stage_plan(cfg), stem_stride=4 if cfg.stem_pool else 2)

    def make_stem(self, in_chans: int, cfg: MENeStResNetConfig) -> nn.Sequential:
        stem = super().make_stem(in_chans, cfg)
        return stem.append(nn.MaxPool2d(3, 2, 1)) if cfg.stem_pool else stem


def _build(variant: str, overrides: dict, pretrained: bool, kwargs: dict) -> MENeStResNet:
    return build_model(MENeStResNet, MENeStResNetConfig, variant, overrides, pretrained, kwargs, normalise_option)


default_cfgs = menest_default_cfgs("menest_ghost_resnet_s", "menest_ghost_resnet_m")  # ME-NeSt-Ghost's: CIFAR-100 at 128 x 128


@register_model("menest_resnet")
def menest_ghost_resnet_s(pretrained: bool = False, **kwargs) -> MENeStResNet:
    """ResNet-50's layout (3-4-6-3) with MS and MS-Ghost blocks (ME-NeSt-Ghost, section 6), sized as ME-NeSt-Ghost-S."""
    return _build("menest_ghost_resnet_s", dict(stages=STAGES_RESNET_S, stem_width=64, drop_rate=0.2), pretrained,
                  kwargs)


@register_model("menest_resnet")
def menest_ghost_resnet_m(pretrained: bool = False, **kwargs) -> MENeStResNet:
    """ResNet-152's layout (3-8-36-3) with MS and MS-Ghost blocks (ME-NeSt-Ghost, section 6), sized as
    ME-NeSt-Ghost-M."""
    return _build("menest_ghost_resnet_m", dict(stages=STAGES_RESNET_M, stem_width=64, drop_rate=0.3), pretrained,
                  kwargs)
