"""Inference fusion: :func:`fuse` returns an eval-only copy of a model with every BatchNorm that
directly follows a convolution folded into it, every MixConv merged into as few convolutions as measured fastest,
and Mish computed by one compiled kernel. Outputs equal the unfused model's in eval mode within float32 rounding
(tests/test_fuse.py compares them at 1e-4 on calibrated networks).

Which pairs are folded is said by the modules themselves (each pair is a convolution whose output feeds the BN and
nothing else): every block of ours that holds a BN has a ``fuse_pairs()`` method returning ``(conv_name, bn_name)``
child pairs, like timm's ``fuse()``/``reparameterize()`` convention; a BN deliberately left is named in the block's
``fuse_keeps``. :func:`undeclared_batchnorms` lists any BN that neither names, so a renamed BN cannot silently stop
being folded (tests/test_fuse.py checks it on every model family).

- ``nn.Sequential``: any convolution directly followed by a BN (ME-NeSt-Ghost's stem and head, the Ghost modules'
  primary and cheap operations, ME-NeSt-Ghost, section 3.2.1; shortcut projections).
- ME-NeSt-Ghost blocks (ME-NeSt-Ghost, sections 3.1 and 3.2): the MixConv and the BN after it; the
  Split-Attention's first 1x1 convolution and its BN (section 3.1.2).
- GhostMixNet blocks (*GhostMixNet*, "Residual Layers"): a plain convolution and its BN (the "ResNet" ablation
  rows); a linear Ghost
  module and the block BN after it, folded into both of its parts (:class:`~ghostnest.layers.fused.FusedGhostModule`).
  The BN after the *activated* Ghost module (``conv1 -> bn1``) follows a ReLU and stays.
- timm's EfficientNet-V2 (the baselines), through one adapter on timm's public structure (a ``Conv2d`` child
  followed by a ``BatchNormAct2d`` child): stem, head and every block's pair; the BN is replaced by its activation. So both sides of a comparison get the same treatment.

A MixConv (ME-NeSt-Ghost, section 3.1.1) with BN folded is laid out for the runtime that will run it (``runtime``):

- ``"torch"`` (PyTorch, oneDNN): one depthwise ``nn.Conv2d`` with zero-padded kernels where its implementation
  resolves to ``"single"`` (channel multiplier 1 by default), otherwise a :class:`~ghostnest.layers.MixConv2d`
  pinned to its implementation with the BN folded into each group's bias.
- ``"onnxruntime"`` (ONNX exports): one depthwise convolution with zero-padded kernels (after repeating the input
  channels for a multiplier above 1) where a kernel group's channel count is not a multiple of
  :data:`ORT_DEPTHWISE_VECTOR`, otherwise separate depthwise convolutions per kernel group. onnxruntime's depthwise
  kernels run channels in vectors of that width and the remainder far slower (a 12-channel 9x9 group took 13x the
  time per multiply-add of a 960-channel one), while merging pays for the zero taps (81 per channel for 3-9 kernels
  against 41 on average). Measured on ME-NeSt-Ghost-S at 128x128: docs/deployment.md.
"""
from __future__ import annotations

import copy
import types

import torch
from torch import nn

from .layers.depthwise import SameConv2d
from .layers.fused import FusedGhostModule, use_fast_mish
from .layers.ghost import GhostModule
from .layers.mixconv import MixConv2d, set_mixconv_impl

__all__ = ["fuse", "fold_bn_into_conv", "undeclared_batchnorms", "RUNTIMES"]

RUNTIMES = ("torch", "onnxruntime")
ORT_DEPTHWISE_VECTOR = 16  # channels per vector in onnxruntime's depthwise convolution kernels (measured)


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``scale, shift`` with ``bn(x) == scale * x + shift`` in eval mode (computed in float64)."""
    var = bn.running_var.double()
    mean = bn.running_mean.double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


def fold_bn_into_conv(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> nn.Conv2d:
    """Fold the per-output-channel affine ``scale * conv(x) + shift`` into ``conv`` (in place; returns it)."""
    dtype = conv.weight.dtype
    w = conv.weight.detach().double() * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(shift)
    b = b * scale + shift
    conv.weight = nn.Parameter(w.to(dtype), requires_grad=False)
    conv.bias = nn.Parameter(b.to(dtype), requires_grad=False)
    return conv


def _fold_mixconv(mix: MixConv2d, scale: torch.Tensor, shift: torch.Tensor) -> MixConv2d:
    start = 0
    for conv in mix.convs:
        n = conv.out_channels
        fold_bn_into_conv(conv, scale[start:start + n], shift[start:start + n])
        start += n
    return mix


class RepeatChannels(nn.Module):
    """Each input channel repeated ``repeats`` times in place (``x.repeat_interleave(repeats, dim=1)``): the input
    of a merged MixConv with channel multiplier ``repeats``, whose output channel ``c * repeats + j`` reads input
    channel ``c``."""

    def __init__(self, repeats: int):
        super().__init__()
        self.repeats = repeats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(self.repeats, dim=1)

    def extra_repr(self) -> str:
        return f"repeats={self.repeats}"


def _merged_conv(mix: MixConv2d, groups: int) -> nn.Conv2d:
    """The single depthwise convolution of ``mix``'s zero-padded kernels (``groups``: its input channels); a
    :class:`~ghostnest.layers.depthwise.SameConv2d`, so the kernel taps that only meet padding are left out."""
    weight, bias = mix.merged_weight()
    k = weight.shape[-1]
    conv = SameConv2d(groups, mix.out_channels, k, mix.stride, groups=groups, bias=bias is not None,
                      device=weight.device, dtype=weight.dtype)
    conv.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
    if bias is not None:
        conv.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
    return conv


def _merge_mixconv(mix: MixConv2d, runtime: str) -> nn.Module:
    """``mix`` laid out for ``runtime`` (see the module docstring): merged convolution(s), or ``mix`` pinned."""
    m = mix.multiplier
    if runtime == "onnxruntime":
        if len(mix.convs) > 1 and all(c * m % ORT_DEPTHWISE_VECTOR == 0 for c in mix.splits):
            return set_mixconv_impl(mix, "repeat" if m > 1 else "split")
        conv = _merged_conv(mix, mix.out_channels)
        return nn.Sequential(RepeatChannels(m), conv) if m > 1 else conv
    impl = mix.resolved_impl()  # under no_grad: the inference implementation, pinned from here on
    set_mixconv_impl(mix, impl)
    if impl != "single" and len(mix.convs) > 1:
        return mix
    return _merged_conv(mix, mix.in_channels)


def _bn_replacement(bn: nn.Module) -> nn.Module:
    """What stays of a folded BN: nothing, or the activation of timm's ``BatchNormAct2d``."""
    act = getattr(bn, "act", None)
    return act if isinstance(act, nn.Module) else nn.Identity()


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, nn.BatchNorm2d) and m.track_running_stats and m.running_mean is not None


def _fold_pair(conv: nn.Module, bn: nn.Module) -> nn.Module | None:
    """The fused replacement of ``conv`` followed by ``bn``, or None when they do not fold."""
    if not _is_bn(bn):
        return None
    scale, shift = _bn_scale_shift(bn)
    if isinstance(conv, nn.Conv2d) and conv.out_channels == bn.num_features:
        return fold_bn_into_conv(conv, scale, shift)
    if isinstance(conv, MixConv2d) and conv.out_channels == bn.num_features:
        return _fold_mixconv(conv, scale, shift)
    if isinstance(conv, GhostModule) and conv.out_channels == bn.num_features:
        return _fold_ghost(conv, scale, shift)
    return None


def _fold_ghost(ghost: GhostModule, scale: torch.Tensor, shift: torch.Tensor) -> nn.Module | None:
    """A linear Ghost module followed by a BN -> :class:`FusedGhostModule` (None if the module has an activation)."""
    if not all(isinstance(seq[-1], nn.Identity) for seq in (ghost.primary_conv, ghost.cheap_operation)):
        return None
    primary, cheap = ghost.primary_conv, ghost.cheap_operation
    init = primary[0].out_channels
    keep = ghost.out_channels - init  # cheap channels that survive the trim
    cheap_out = cheap[0].out_channels
    c_scale = torch.ones(cheap_out, dtype=scale.dtype)
    c_shift = torch.zeros(cheap_out, dtype=shift.dtype)
    c_scale[:keep], c_shift[:keep] = scale[init:], shift[init:]
    op = cheap[0]
    if isinstance(op, MixConv2d):
        _fold_mixconv(op, c_scale, c_shift)
    else:
        fold_bn_into_conv(op, c_scale, c_shift)
    dtype = primary[0].weight.dtype
    return FusedGhostModule(primary, cheap, scale[:init].to(dtype), shift[:init].to(dtype), ghost.out_channels,
                            ghost.trim)


def _timm_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """The one adapter for timm's EfficientNet family, from its public structure: every ``nn.Conv2d`` child directly
    followed, in child order, by a ``timm.layers.BatchNormAct2d`` child. In timm's ``EfficientNet``, ``ConvBnAct``,
    ``DepthwiseSeparableConv``, ``InvertedResidual`` and ``EdgeResidual`` child order is forward order for these
    pairs (tests/test_fuse.py checks the fused outputs)."""
    from timm.layers import BatchNormAct2d

    children = list(module._modules.items())
    return [(a, b) for (a, conv), (b, bn) in zip(children[:-1], children[1:], strict=True)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, BatchNormAct2d)]


def _named_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(convolution, BN) child names of ``module`` whose data flow is conv -> BN directly.

    Our blocks declare them (``fuse_pairs()``); an ``nn.Sequential`` pairs each child with the next; timm's blocks
    go through :func:`_timm_pairs`."""
    declared = getattr(module, "fuse_pairs", None)
    if callable(declared):
        return list(declared())
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        return list(zip(names[:-1], names[1:], strict=True))
    if type(module).__module__.startswith("timm."):
        return _timm_pairs(module)
    return []


def undeclared_batchnorms(model: nn.Module) -> list[str]:
    """Names of modules in ``model`` holding a BatchNorm child that no (conv, BN) pair names: BNs fuse never folds.

    Our blocks must list every conv -> BN pair in ``fuse_pairs()``; a BN that follows something else (e.g. an
    activation) is listed in the block's ``fuse_keeps`` instead, so that a renamed or new BN shows up here."""
    found = []
    for name, module in model.named_modules():
        paired = {bn for _, bn in _named_pairs(module)} | set(getattr(module, "fuse_keeps", ()))
        if any(isinstance(c, nn.BatchNorm2d) and n not in paired for n, c in module.named_children()):
            found.append(name)
    return found


def _fuse_tree(module: nn.Module, runtime: str) -> None:
    for child in module.children():
        _fuse_tree(child, runtime)
    for conv_name, bn_name in _named_pairs(module):
        conv, bn = module._modules.get(conv_name), module._modules.get(bn_name)
        if conv is None or bn is None:
            continue
        fused = _fold_pair(conv, bn)
        if fused is not None:
            module._modules[conv_name] = fused
            module._modules[bn_name] = _bn_replacement(bn)
    for name, child in list(module._modules.items()):
        if isinstance(child, MixConv2d):
            module._modules[name] = _merge_mixconv(child, runtime)


def _eval_only_train(self: nn.Module, mode: bool = True) -> nn.Module:
    if mode:
        raise RuntimeError("this model was fused for inference by ghostnest.fuse and is eval-only; "
                           "train the unfused model and fuse it again")
    return nn.Module.train(self, False)


def fuse(model: nn.Module, fast_mish: bool = True, runtime: str = "torch") -> nn.Module:
    """An eval-only, fused copy of ``model`` (any registered model: ours or timm's EfficientNet-V2).

    Folds every BatchNorm into the convolution before it (also a BN after a linear Ghost module's concatenation,
    into both parts), merges each MixConv's kernel groups into one depthwise convolution where that is the faster
    implementation on ``runtime`` (``"torch"``, or ``"onnxruntime"`` for an ONNX export; see the module docstring),
    and with ``fast_mish`` computes Mish through one compiled kernel (:class:`~ghostnest.layers.fused.FastMish`). ``model`` itself is left
    untouched. The copy keeps the original's memory format (e.g. channels_last), refuses ``train()``, and gives the
    unfused model's eval-mode outputs within float32 rounding.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime={runtime!r} is not valid; choose one of {RUNTIMES}")
    fused = copy.deepcopy(model).eval()
    channels_last = any(
        p.dim() == 4 and p.shape[2] * p.shape[3] > 1 and p.is_contiguous(memory_format=torch.channels_last)
        and not p.is_contiguous() for p in model.parameters()
    )
    with torch.no_grad():
        _fuse_tree(fused, runtime)
    if fast_mish:
        use_fast_mish(fused)
    fused.requires_grad_(False)
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last)
    fused.train = types.MethodType(_eval_only_train, fused)
    return fused
