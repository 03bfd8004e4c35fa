"""EfficientNet-V2 S/M/L/XL baselines (ME-NeSt-Ghost, Table 5), built by timm and listed beside our models.

These are timm's ``efficientnetv2_{s,m,l,xl}`` as they are (SiLU, Fused-MBConv and MBConv blocks); at 100 classes
they have 20.31M / 52.99M / 117.36M / 206.97M parameters, matching the paper's 20M / 53M / 117M / 207M. Their
pretrained cfg is overlaid with the setting the ME-NeSt-Ghost recipe trains them in: CIFAR-100 (100 classes) at the
paper's data resolution, 128 x 128, normalised with CIFAR-100's statistics.
"""
from ..normalization import CIFAR100_MEAN, CIFAR100_STD
from ..registry import register_timm_model
from ._base import timm_cfg_overlay

for _name, _params in (("s", 20), ("m", 53), ("l", 117), ("xl", 207)):
    register_timm_model(f"efficientnetv2_{_name}", "efficientnetv2", paper_params_m=_params,
                        **timm_cfg_overlay(128, 4, CIFAR100_MEAN, CIFAR100_STD, 100))
