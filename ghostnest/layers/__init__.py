"""Reusable layers: the building blocks the two papers introduce or combine."""
from .activations import ACTIVATIONS, get_act
from .attention import ChannelShuffle, SplitAttention, SqueezeExcite
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
    "split_channels",
]
