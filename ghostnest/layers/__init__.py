"""Reusable layers: the building blocks the two papers introduce or combine."""
from .activations import ACTIVATIONS, get_act
from .attention import ChannelShuffle, SplitAttention, SqueezeExcite
from .ghost import GhostModule
from .mixconv import MIXCONV_IMPLS, MixConv2d, set_mixconv_impl, split_channels

__all__ = [
    "ACTIVATIONS",
    "MIXCONV_IMPLS",
    "ChannelShuffle",
    "GhostModule",
    "MixConv2d",
    "SplitAttention",
    "SqueezeExcite",
    "get_act",
    "set_mixconv_impl",
    "split_channels",
]
