"""The recipe's model: built from a :class:`~.config.TrainConfig` (its name, ``model_kwargs`` and class count), and
its full constructor options as plain data (what config.yaml and ``ghostnest recipes show`` print under
``model_options``). :mod:`.config` describes a run; this module builds what it describes."""
from __future__ import annotations

import dataclasses

from .config import TrainConfig


def model_options(model) -> dict:
    """The full constructor configuration of a built model, as plain data (what config.yaml and ``recipes show``
    print under ``model_options``): a ghostnest model's config dataclass (stage table, widths, SE, dropout, ...)
    with its class count; for timm's models, the options timm keeps on the model (``drop_rate``)."""
    import json

    options = dataclasses.asdict(model.cfg) if dataclasses.is_dataclass(getattr(model, "cfg", None)) else {
        key: getattr(model, key) for key in ("drop_rate",) if hasattr(model, key)}
    return json.loads(json.dumps({"num_classes": getattr(model, "num_classes", None), **options}))


def create_recipe_model(cfg: TrainConfig, num_classes: int | None):
    """``cfg``'s model with its ``model_kwargs`` (``num_classes`` if given); a ``ValueError`` naming the
    ``--set model_kwargs.*`` options a model rejects."""
    from ..registry import create_model

    kwargs = dict(cfg.model_kwargs, **({"num_classes": num_classes} if num_classes else {}))
    try:
        return create_model(cfg.model, **kwargs)
    except TypeError as exc:  # timm's models reject unknown constructor options with a TypeError
        raise ValueError(f"model {cfg.model} does not accept model_kwargs {cfg.model_kwargs} ({exc}); fix or drop "
                         "the --set model_kwargs.* options") from None


def recipe_model_options(cfg: TrainConfig) -> dict:
    """:func:`model_options` of ``cfg``'s model, built on the ``meta`` device (no memory, no weights)."""
    import torch

    from ..data.datasets import dataset_classes

    with torch.device("meta"):
        return model_options(create_recipe_model(cfg, cfg.num_classes or dataset_classes(cfg.dataset)))


def classifier_keys(model) -> set[str]:
    """The ``state_dict`` keys of ``model``'s classifier (timm's ``get_classifier()``), empty without one."""
    head = model.get_classifier() if callable(getattr(model, "get_classifier", None)) else None
    if head is None:
        return set()
    name = next((n for n, m in model.named_modules() if m is head), None)
    return {f"{name}.{k}" for k in head.state_dict()} if name else set()
