"""ME-NeSt-Ghost-TSA: ME-NeSt-Ghost with transformer self-attention in place of its Split-Attention units.

The ME-NeSt-Ghost paper's Conclusion (section 6) proposes "replacing split attention units with transformer self
attention", to see whether Split-Attention ("featuremap attention on multiple branches") can compete with it. The
name says that: **T**ransformer **S**elf-**A**ttention. Everything else is ME-NeSt-Ghost S or M as built by
``ghostnest/models/menest.py`` (same stage tables, MS-Ghost blocks, stem, head, Mish, shuffles); only the MS blocks
(section 3.1, Figure 1) change, the Split-Attention unit giving way to multi-head self-attention:

``MixConv(3/5/7/9, stride, one branch) -> BN -> Mish -> [1x1 projection + BN] -> y + SelfAttention2d(y) -> + skip
-> shuffle``

- One branch instead of two: Split-Attention weighs the radix-2 branches of the MixConv; self-attention attends
  among the pixels of one feature map, so the MixConv makes one (the MS block built with ``radix=1``).
- Where and in which form, chosen by measurement (docs/architecture.md, "ME-NeSt-Ghost-TSA"): in every MS block,
  after the block's projection (at the stage width, as a transformer attends over its residual width), in 8 x 8
  windows with a learned relative position bias (CoAtNet's relative attention, timm's ``RelPosBias``), heads of 32
  channels, with the transformer's skip around the attention (``y + attention(y)``: a fresh attention is nearly
  uniform and would replace every pixel by its window's mean in the blocks without a skip, the first of each
  stage). Global attention over the MS stages' maps (64 x 64 pixels at 128 x 128 input, 128 x 128 at the
  recipe's 256) costs many times the whole network; attention in the Split-Attention's own place, at the block's
  expanded width, costs 2.5x ME-NeSt-Ghost-S's FLOPs; after the projection it costs 1.2x, within 5% of the
  parameters of ME-NeSt-Ghost-S and -M (a test checks it).

Any option of :class:`~ghostnest.models.menest.MENeStConfig` works here too, plus where attention goes
(``attn_stages``, ``global_stages``, ``attn_at``) and its form (``window``, ``head_dim``, ``rel_pos``)::

    ghostnest.create_model("menest_ghost_tsa_s", attn_at="expanded", global_stages=(2,))
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from ..layers.self_attention import SelfAttention2d
from ..registry import register_model
from ._base import StagePlan, build_model
from .menest import (MS, STAGES_M, STAGES_S, MENeStConfig, MENeStGhost, MSBlock, menest_default_cfgs,
                     normalise_option)


@dataclass(frozen=True)
class MENeStTSAConfig(MENeStConfig):
    """ME-NeSt-Ghost's options plus where the self-attention goes and in which form."""

    attn_stages: tuple[int, ...] | None = None  # stage rows (0-based) whose MS blocks get self-attention; None: all
    window: int = 8  # side of the attention windows; 0: global attention in every attention stage
    global_stages: tuple[int, ...] = ()  # stage rows with global attention (no position bias) instead of windows
    head_dim: int = 32  # channels per head (CoAtNet's); widths below it get one head
    rel_pos: bool = True  # learned relative position bias in windowed attention (CoAtNet)
    attn_at: str = "output"  # "output": after the block's 1x1 projection, at the stage width; "expanded": in the
    # Split-Attention's own place, at the block's expanded width (where a block has no projection the two coincide)


def attention_block(in_channels: int, out_channels: int, stride: int, expansion: int, cfg: MENeStTSAConfig,
                    drop_path: float, window: int) -> MSBlock:
    """An MS block (ME-NeSt-Ghost, section 3.1) with one MixConv branch and :class:`SelfAttention2d` for its
    Split-Attention unit: after the projection (``cfg.attn_at="output"``, appended to ``proj``) or in the unit's
    place (``"expanded"``, as ``attn``, its own output projection left out when the block's projection follows).
    ``window=0``: global attention, without position bias."""
    rel_pos = cfg.rel_pos and window > 0
    width = in_channels * expansion
    projects = width != out_channels  # where MSBlock has a 1x1 projection
    one_branch = replace(cfg, radix=1)
    if cfg.attn_at == "output" and projects:
        block = MSBlock(in_channels, out_channels, stride, expansion, one_branch, drop_path, attn=nn.Identity())
        block.proj.append(SelfAttention2d(out_channels, cfg.head_dim, window, rel_pos=rel_pos, residual=True))
        return block
    attn = SelfAttention2d(width, cfg.head_dim, window, rel_pos=rel_pos, proj=not projects, residual=True)
    return MSBlock(in_channels, out_channels, stride, expansion, one_branch, drop_path, attn=attn)


def attention_rows(cfg: MENeStTSAConfig) -> tuple[int, ...]:
    """The stage rows that get self-attention; ``ValueError`` for rows that do not exist or hold no MS blocks."""
    ms_rows = tuple(i for i, row in enumerate(cfg.stages) if row[0] == MS)
    rows = ms_rows if cfg.attn_stages is None else tuple(cfg.attn_stages)
    bad = [i for i in (*rows, *cfg.global_stages) if i not in ms_rows]
    if bad:
        raise ValueError(f"attn_stages/global_stages {bad} are not MS stages; the MS stages (whose Split-Attention "
                         f"self-attention replaces) are rows {list(ms_rows)} of the stage table")
    if not set(cfg.global_stages) <= set(rows):
        raise ValueError(f"global_stages={list(cfg.global_stages)} must be among the attention stages {list(rows)}")
    if cfg.attn_at not in ("expanded", "output"):
        raise ValueError(f"attn_at={cfg.attn_at!r} must be 'expanded' or 'output'")
    if not isinstance(cfg.window, int) or cfg.window < 0:
        raise ValueError(f"window={cfg.window!r} must be an integer >= 1, or 0 for global attention")
    return rows


class MENeStGhostTSA(MENeStGhost):
    """ME-NeSt-Ghost with self-attention blocks in place of the MS blocks of the attention stages.

    Built as :class:`~ghostnest.models.menest.MENeStGhost` (stem, stages, head, classifier, its stochastic-depth
    rule and initialisation), except that each MS block of an attention stage is an :func:`attention_block` with the
    same arguments; its attention is then initialised as ViT's (:meth:`SelfAttention2d.reset_parameters`), the rest
    of the network as ME-NeSt-Ghost.
    """

    family_name = "ME-NeSt-Ghost-TSA"

    def __init__(self, num_classes: int = 100, in_chans: int = 3, cfg: MENeStTSAConfig = MENeStTSAConfig(),
                 global_pool: str = "avg"):
        super().__init__(num_classes, in_chans, cfg, global_pool)
        for m in self.modules():
            if isinstance(m, SelfAttention2d):
                m.reset_parameters()  # over the He initialisation ME-NeSt-Ghost gives every convolution

    @classmethod
    def stage_plan(cls, cfg: MENeStTSAConfig) -> StagePlan:
        plan = super().stage_plan(cfg)
        attention_rows(cfg)  # checks where the attention goes
        return plan

    def make_block(self, row: int, block_type: str, in_channels: int, out_channels: int, stride: int, expansion: int,
                   cfg: MENeStTSAConfig, drop_path: float) -> nn.Module:
        if row not in attention_rows(cfg):
            return super().make_block(row, block_type, in_channels, out_channels, stride, expansion, cfg, drop_path)
        window = 0 if row in cfg.global_stages else cfg.window
        return attention_block(in_channels, out_channels, stride, expansion, cfg, drop_path, window)


def _build(variant: str, overrides: dict, pretrained: bool, kwargs: dict) -> MENeStGhostTSA:
    return build_model(MENeStGhostTSA, MENeStTSAConfig, variant, overrides, pretrained, kwargs, normalise_option)


default_cfgs = menest_default_cfgs("menest_ghost_tsa_s", "menest_ghost_tsa_m")  # ME-NeSt-Ghost's: CIFAR-100 at 128 x 128


@register_model("menest_tsa")
def menest_ghost_tsa_s(pretrained: bool = False, **kwargs) -> MENeStGhostTSA:
    """ME-NeSt-Ghost-S (Table 1) with windowed self-attention in its 10 MS blocks (ME-NeSt-Ghost, section 6)."""
    return _build("menest_ghost_tsa_s", dict(stages=STAGES_S, stem_width=24, drop_rate=0.2), pretrained, kwargs)


@register_model("menest_tsa")
def menest_ghost_tsa_m(pretrained: bool = False, **kwargs) -> MENeStGhostTSA:
    """ME-NeSt-Ghost-M (Table 2) with windowed self-attention in its 13 MS blocks (ME-NeSt-Ghost, section 6)."""
    return _build("menest_ghost_tsa_m", dict(stages=STAGES_M, stem_width=24, drop_rate=0.3), pretrained, kwargs)
