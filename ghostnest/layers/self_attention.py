"""Multi-head self-attention over the pixels of a feature map, windowed or global, with a relative position bias.

The ME-NeSt-Ghost paper's Conclusion (section 6) asks whether its Split-Attention units, "featuremap attention on
multiple branches", can compete with "transformer self attention"; :class:`SelfAttention2d` is the self-attention
that ME-NeSt-Ghost-TSA (``ghostnest/models/menest_tsa.py``) puts in their place.

Every pixel is a token. A 1x1 convolution makes queries, keys and values; the tokens attend to each other within
non-overlapping ``window x window`` windows (Swin, Liu et al. 2021) or, with ``window=0``, across the whole map
(BoTNet, Srinivas et al. 2021; CoAtNet's transformer stages, Dai et al. 2021); heads of ``head_dim`` channels each
run through :func:`torch.nn.functional.scaled_dot_product_attention`. With ``rel_pos`` (windowed only) a learned
bias per head and relative offset is added to the attention logits: CoAtNet's relative attention, kept in timm's
:class:`~timm.layers.RelPosBias` (the Swin/CoAtNet table of ``(2w-1)^2`` offsets). The table depends on the window
only, so a windowed layer runs at any input size:

- a map smaller than the window is one window of the map's size, whose offsets are the centre of the table;
- a map that the window does not divide is zero-padded to a multiple of it, and the padded keys are masked out.

Global attention has no bias here: a bias table over the whole map would tie the layer to one input size.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import RelPosBias, register_notrace_module, trunc_normal_
from torch import nn


@register_notrace_module  # windows and padding follow the map size: a leaf for torch.fx (timm's tracer)
class SelfAttention2d(nn.Module):
    """``(N, C, H, W) -> (N, C, H, W)``: multi-head self-attention among the pixels of each window (or the map).

    Args:
        channels: ``C``; the attention works at this width (queries, keys and values of ``C`` channels each).
        head_dim: channels per head, nominally: ``C // head_dim`` heads (at least one), which must divide ``C``
            (``C = 48`` with ``head_dim=32`` gives one head of 48 channels).
        window: side of the square attention windows; ``0`` attends across the whole map (global).
        rel_pos: add a learned relative position bias per head (windowed attention only).
        proj: end with a 1x1 output projection. Leave it out where a linear 1x1 projection follows anyway (two
            linear maps in a row are one).
        qkv_bias: bias of the query/key/value convolution (as in ViT, Swin and CoAtNet).
        residual: return ``x + attention(x)``, a transformer's attention sub-layer with its skip connection. Without
            it, a fresh layer's near-uniform attention replaces every pixel by about its window's mean.
    """

    def __init__(self, channels: int, head_dim: int = 32, window: int = 8, rel_pos: bool = True, proj: bool = True,
                 qkv_bias: bool = True, residual: bool = False):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels={channels} must be >= 1")
        if head_dim < 1:
            raise ValueError(f"head_dim={head_dim} must be >= 1")
        if not isinstance(window, int) or window < 0:
            raise ValueError(f"window={window!r} must be an integer >= 1, or 0 for global attention")
        if rel_pos and window == 0:
            raise ValueError("rel_pos=True needs windowed attention (window >= 1): a bias table over the whole map "
                             "would tie the layer to one input size; use rel_pos=False with window=0")
        self.channels, self.window, self.residual = channels, window, residual
        self.num_heads = max(1, channels // head_dim)
        if channels % self.num_heads:
            raise ValueError(f"channels={channels} cannot be split into {self.num_heads} heads (channels // "
                             f"head_dim={head_dim}); choose a head_dim that gives a divisor of {channels} heads")
        self.head_dim = channels // self.num_heads
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=qkv_bias)
        self.rel_pos = RelPosBias((window, window), self.num_heads) if rel_pos else None
        self.proj = nn.Conv2d(channels, channels, 1) if proj else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """ViT's (and timm's attention layers') initialisation: weights truncated-normal with std 0.02, biases zero.
        A residual attention therefore starts close to the identity instead of adding a window average of the
        size of its input (as He initialisation, ME-NeSt-Ghost's for convolutions, does)."""
        for conv in (self.qkv, self.proj):
            if isinstance(conv, nn.Conv2d):
                trunc_normal_(conv.weight, std=0.02)
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)

    def _bias(self, wh: int, ww: int) -> torch.Tensor:
        """``(1, heads, wh * ww, wh * ww)``: the relative position bias of a ``wh x ww`` window (called only with
        ``rel_pos``)."""
        rel_pos = self.rel_pos
        assert rel_pos is not None
        if wh == self.window and ww == self.window:
            return rel_pos.get_bias()
        # a smaller window: its offsets (|dy| < wh, |dx| < ww) are the centre of the (2w-1) x (2w-1) table, whose
        # row for offset (dy, dx) is (dy + w - 1) * (2w - 1) + dx + w - 1 (RelPosBias's order)
        w, table = self.window, rel_pos.relative_position_bias_table
        ys = torch.arange(wh, device=table.device).repeat_interleave(ww)  # each token's row and column
        xs = torch.arange(ww, device=table.device).repeat(wh)
        index = (ys[:, None] - ys[None, :] + w - 1) * (2 * w - 1) + xs[:, None] - xs[None, :] + w - 1
        return table[index.view(-1)].view(wh * ww, wh * ww, self.num_heads).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if c != self.channels:
            raise ValueError(f"SelfAttention2d expects {self.channels} input channels, got {c}")
        wh, ww = (h, w) if self.window == 0 else (min(self.window, h), min(self.window, w))
        ph, pw = -h % wh, -w % ww
        qkv = self.qkv(x)
        if ph or pw:
            qkv = F.pad(qkv, (0, pw, 0, ph))
        nh, nw, heads, d = (h + ph) // wh, (w + pw) // ww, self.num_heads, self.head_dim
        # (N, 3, heads, d, nh, wh, nw, ww) -> (3, N * nh * nw windows, heads, wh * ww tokens, d); 4-D, because
        # PyTorch's CPU attention kernels take 4-D inputs only (with one more batch dimension it ran 4x slower)
        qkv = qkv.view(n, 3, heads, d, nh, wh, nw, ww).permute(1, 0, 4, 6, 2, 5, 7, 3)
        q, k, v = qkv.reshape(3, n * nh * nw, heads, wh * ww, d).unbind(0)
        mask: Optional[torch.Tensor] = None
        if self.rel_pos is not None:
            mask = self._bias(wh, ww).to(q.dtype)
        if ph or pw:  # padded keys take no attention: -inf before the softmax
            valid = F.pad(torch.ones(1, 1, h, w, dtype=torch.bool, device=x.device), (0, pw, 0, ph))
            valid = valid.view(nh, wh, nw, ww).permute(0, 2, 1, 3).reshape(nh * nw, 1, 1, wh * ww)
            pad = torch.zeros(valid.shape, dtype=q.dtype, device=x.device).masked_fill(~valid, float("-inf"))
            if mask is not None:
                pad = mask + pad
            mask = pad.repeat(n, 1, 1, 1)  # window b * nh * nw + i: pad[i]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N * windows, heads, tokens, d)
        out = out.view(n, nh, nw, heads, wh, ww, d).permute(0, 3, 6, 1, 4, 2, 5).reshape(n, c, h + ph, w + pw)
        if ph or pw:
            out = out[:, :, :h, :w]
        return x + self.proj(out) if self.residual else self.proj(out)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, heads={self.num_heads}, head_dim={self.head_dim}, "
                f"window={self.window or 'global'}, rel_pos={self.rel_pos is not None}, residual={self.residual}")
