"""Activation factory: one place that turns a name into an ``nn.Module``.

ME-NeSt-Ghost uses Mish throughout (ME-NeSt-Ghost, section 5.1); EfficientNet-V2 uses SiLU; GhostMixNet uses ReLU
(*GhostMixNet*, "Residual Layers").
"""
from __future__ import annotations

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "mish": nn.Mish,
    "gelu": nn.GELU,
    "hardswish": nn.Hardswish,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def get_act(name: str | None, inplace: bool = True) -> nn.Module:
    """Return a fresh activation module for ``name`` (``None`` or ``"identity"`` gives ``nn.Identity``)."""
    if name is None:
        return nn.Identity()
    if not isinstance(name, str) or name.lower() not in ACTIVATIONS:
        raise ValueError(f"act={name!r} is not a known activation; choose one of {sorted(ACTIVATIONS)}")
    cls = ACTIVATIONS[name.lower()]
    if cls in (nn.ReLU, nn.SiLU, nn.Mish, nn.Hardswish):
        return cls(inplace=inplace)
    return cls()
