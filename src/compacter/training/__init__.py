"""Training and evaluation: `compacter train`, resumable, on one process or many."""

from .config import TrainConfig
from .loop import train
from .resume import RESULTS_FILE

__all__ = ["RESULTS_FILE", "TrainConfig", "train"]
