"""Reusable layers: the building blocks the two papers introduce or combine."""
from .activations import ACTIVATIONS, get_act
from .attention import ChannelShuffle, SplitAttention, SqueezeExcite, make_divisible
from .ghost import GhostModule
from .mixconv import MixConv2d, split_channels

__all__ = [
    "ACTIVATIONS",
    "ChannelShuffle",
    "GhostModule",
    "MixConv2d",
    "SplitAttention",
    "SqueezeExcite",
    "get_act",
    "make_divisible",
    "split_channels",
]
