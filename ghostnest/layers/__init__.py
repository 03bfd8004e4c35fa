"""Reusable layers: the building blocks the two papers introduce or combine."""
from .activations import ACTIVATIONS, get_act
from .attention import ChannelShuffle, SplitAttention, SqueezeExcite
from .ghost import GhostModule
from .mixconv import MixConv2d, split_channels
from .self_attention import SelfAttention2d

__all__ = [
    "ACTIVATIONS",
    "ChannelShuffle",
    "GhostModule",
    "MixConv2d",
    "SelfAttention2d",
    "SplitAttention",
    "SqueezeExcite",
    "get_act",
    "split_channels",
]
