"""Training, evaluation and prediction with the papers' recipes (see docs/training.md).

Reading order: :mod:`.trainer` (``train``: builds the run), :mod:`.engine` (``fit``, ``train_one_epoch``),
:mod:`.evaluate` (``evaluate``; eval and predict), :mod:`.resume` (``ResumeState``), :mod:`.rundir`, :mod:`.optim`,
:mod:`.metrics`, :mod:`.checkpoint`, :mod:`.model`, :mod:`.config`, :mod:`.qat`, :mod:`.distributed` and
:mod:`.stop`; the input pipeline is :mod:`ghostnest.data.pipeline`.
"""
from .checkpoint import load_checkpoint
from .config import TrainConfig, list_recipes, load_recipe, resolve_config
from .engine import TrainingDiverged
from .trainer import PeerLost, train, train_command

__all__ = ["PeerLost", "TrainConfig", "TrainingDiverged", "list_recipes", "load_checkpoint", "load_recipe",
           "resolve_config", "train", "train_command"]
