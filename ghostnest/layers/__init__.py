"""Reusable layers: the building blocks the two papers introduce or combine."""
from .activations import ACTIVATIONS, get_act
from .attention import ChannelShuffle, SplitAttention, SqueezeExcite
from .ghost import GhostModule
from .mixconv import MIXCONV_IMPLS, MixConv2d, set_mixconv_impl, split_channels
from .self_attention import SelfAttention2d

__all__ = [
    "ACTIVATIONS",
    "MIXCONV_IMPLS",
    "ChannelShuffle",
    "GhostModule",
    "MixConv2d",
    "SelfAttention2d",
    "SplitAttention",
    "SqueezeExcite",
    "get_act",
    "set_mixconv_impl",
    "split_channels",
]
