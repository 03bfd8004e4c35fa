"""ghostnest: ME-NeSt-Ghost and GhostMixNet image classifiers in PyTorch.

>>> import ghostnest
>>> model = ghostnest.create_model("ghostmixnet", num_classes=10)
"""
from . import models  # noqa: F401  (registers every model, with timm's registry too)
from .fuse import fuse  # noqa: E402  (inference fast path, issue 7)
from .registry import create_model, list_models, model_info
from .train.checkpoint import load_checkpoint  # noqa: E402  (trained model + its preprocessing, for eval)

__version__ = "0.1.0"
__all__ = ["create_model", "fuse", "list_models", "load_checkpoint", "model_info", "__version__"]
