"""Training, evaluation and prediction with the papers' recipes (see docs/training.md)."""
from .checkpoint import load_checkpoint
from .config import TrainConfig, list_recipes, load_recipe, resolve_config
from .loop import TrainingDiverged, train

__all__ = ["TrainConfig", "TrainingDiverged", "list_recipes", "load_checkpoint", "load_recipe", "resolve_config",
           "train"]
