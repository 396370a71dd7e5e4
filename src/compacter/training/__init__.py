"""Training and evaluation: `compacter train`, resumable, on one process or many."""

from .config import TrainConfig
from .loop import RESULTS_FILE, train

__all__ = ["RESULTS_FILE", "TrainConfig", "train"]
