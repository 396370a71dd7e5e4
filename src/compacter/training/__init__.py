"""Training and evaluation: `compacter train` (and `--lr auto`: ``train_with_lr_search``), resumable, on one process
or many."""

from .config import TrainConfig
from .loop import train
from .resume import RESULTS_FILE
from .search import train_with_lr_search

__all__ = ["RESULTS_FILE", "TrainConfig", "train", "train_with_lr_search"]
