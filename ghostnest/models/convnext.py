"""ConvNeXt baselines (Liu et al., 2022), built by timm: the ME-NeSt-Ghost paper's first future-work comparison.

ME-NeSt-Ghost, section 6: "compare the model's performance with that of the modern CNNs that utilise Transformer
Self Attention along with convolutions, for example the ConvNeXt (Liu et al., 2022) and CoAtNet (Dai et al.,
2021)". These are timm's ``convnext_{nano,tiny,small}`` as they are, never re-implemented, listed beside ours at the
sizes that bracket ME-NeSt-Ghost-S and -M (100 classes): nano 15.02M and tiny 27.90M around S's 19.45M, tiny and
small 49.53M around M's 49.05M. ConvNeXt is fully convolutional (4x4 patchify stem, stride 32 overall), so one
model runs at 128 x 128 (``ghostnest models``, bench) and at the recipe's 256 x 256 alike; inputs must be at least
32 x 32. Their pretrained cfg is overlaid with the setting the ``menest-cifar100`` recipe trains them in, as the
EfficientNet-V2 baselines' (CIFAR-100 at 128 x 128, its normalisation, no crop).
"""
from ..normalization import CIFAR100_MEAN, CIFAR100_STD
from ..registry import register_timm_model
from ._base import timm_cfg_overlay

for _name in ("convnext_nano", "convnext_tiny", "convnext_small"):
    register_timm_model(_name, "convnext", **timm_cfg_overlay(128, 4, CIFAR100_MEAN, CIFAR100_STD, 100))
