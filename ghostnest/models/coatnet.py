"""CoAtNet baselines (Dai et al., 2021), built by timm: the ME-NeSt-Ghost paper's first future-work comparison.

ME-NeSt-Ghost, section 6, names CoAtNet beside ConvNeXt as the modern CNN-transformer hybrids to compare with. These
are timm's ``coatnet_{nano,0,1,2}_rw_224`` (Ross Wightman's CoAtNet: MBConv stages C-C then transformer stages
T-T with relative position bias, as the paper's CoAtNet-0..2 layout), never re-implemented, at the sizes that
bracket ME-NeSt-Ghost-S and -M (100 classes): nano 14.65M and 0 26.70M around S's 19.45M, 1 40.94M and 2 72.83M
around M's 49.05M.

**Input size is fixed at construction.** The transformer stages attend over the whole feature map with a learned
bias per relative offset, whose table is sized by ``img_size`` (the ``_224`` in timm's names is its default). timm
marks such models ``fixed_input_size`` and builds them for its pretrained cfg's input size, here overlaid with 128
(with the rest of the ``menest-cifar100`` recipe's setting, as for the EfficientNet-V2 baselines), the size
``ghostnest models`` and ``bench`` count and time at; a model for another size is built with ``img_size`` (its cfg
then says that size), e.g. for the ``menest-cifar100`` recipe, which trains and evaluates at 256::

    ghostnest train --recipe menest-cifar100 --set model=coatnet_0_rw_224 --set model_kwargs.img_size=256

A checkpoint records ``img_size`` with its other ``model_kwargs``, so eval, predict and export rebuild it at that
size. Its ``check_input`` (called by training, export and bench) refuses another size in one line naming the
``img_size`` to use (``ghostnest.registry.register_timm_model``).
"""
from ..normalization import CIFAR100_MEAN, CIFAR100_STD
from ..registry import register_timm_model
from ._base import timm_cfg_overlay

for _name in ("coatnet_nano_rw_224", "coatnet_0_rw_224", "coatnet_1_rw_224", "coatnet_2_rw_224"):
    register_timm_model(_name, "coatnet", **timm_cfg_overlay(128, 4, CIFAR100_MEAN, CIFAR100_STD, 100))
