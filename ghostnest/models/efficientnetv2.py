"""EfficientNet-V2 S/M/L/XL baselines (ME-NeSt-Ghost, Table 5), built by timm and listed beside our models.

These are timm's ``efficientnetv2_{s,m,l,xl}`` as they are (SiLU, Fused-MBConv and MBConv blocks); at 100 classes
they have 20.31M / 52.99M / 117.36M / 206.97M parameters, matching the paper's 20M / 53M / 117M / 207M. Their
pretrained cfg is overlaid with the setting the ME-NeSt-Ghost recipe trains them in: CIFAR-100 (100 classes) at the
paper's data resolution, 128 x 128, normalised with CIFAR-100's statistics.
"""
from ..normalization import CIFAR100_MEAN, CIFAR100_STD
from ..registry import register_timm_model

for _name, _params in (("s", 20), ("m", 53), ("l", 117), ("xl", 207)):
    register_timm_model(f"efficientnetv2_{_name}", "efficientnetv2", paper_params_m=_params, input_size=(3, 128, 128),
                        test_input_size=None, pool_size=(4, 4), num_classes=100, mean=CIFAR100_MEAN, std=CIFAR100_STD,
                        crop_pct=1.0, interpolation="bicubic")
