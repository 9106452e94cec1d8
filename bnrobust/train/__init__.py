"""Training: the one SGD trainer every experiment uses (`train.<option>` in a config)."""
from .trainer import TRAINERS, TrainConfig, TrainResult, train

__all__ = ["TRAINERS", "TrainConfig", "TrainResult", "train"]
