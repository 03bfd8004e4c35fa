"""ghostnest: ME-NeSt-Ghost and GhostMixNet image classifiers in PyTorch.

>>> import ghostnest
>>> model = ghostnest.create_model("ghostmixnet", num_classes=10)
"""
from . import models  # noqa: F401  (registers every model, with timm's registry too)
from .registry import create_model, list_models, model_info

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "model_info", "__version__"]
