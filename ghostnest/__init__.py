"""ghostnest: ME-NeSt-Ghost and GhostMixNet image classifiers in PyTorch.

>>> import ghostnest
>>> model = ghostnest.create_model("ghostmixnet", num_classes=10)

Importing the package registers every model family (with timm's registry too) and nothing else: training, bench,
report and export code is imported only when used (``ghostnest.load_checkpoint`` on first access). ``fuse`` is
imported eagerly: it needs only the layers, and a lazy attribute would be shadowed by the submodule
``ghostnest.fuse`` as soon as anything imports that.
"""
from __future__ import annotations

import importlib

from . import models  # noqa: F401  (registers every model family, with timm's registry too)
from .fuse import fuse  # inference fast path: BN folding, merged MixConv, compiled Mish
from .registry import create_model, list_models, model_info

__version__ = "0.1.0"
__all__ = ["create_model", "fuse", "list_models", "load_checkpoint", "model_info", "__version__"]

# Attributes imported on first access: name -> (module, attribute).
_LAZY = {
    "load_checkpoint": (".train.checkpoint", "load_checkpoint"),  # a trained model and its preprocessing
}


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module, __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
