"""GLUE and SuperGLUE as text-to-text (and as classification): loading, the paper's splits, metrics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .loading import DataFileError, load_raw
from .metrics import compute_metrics
from .splits import PAPER_SEED, low_resource, paper_splits
from .tasks import TASKS, Task, get_task


@dataclass
class TaskData:
    task: Task
    splits: dict[str, list[dict]]  # train / validation / test, hub-schema examples

    def text_to_text(self, split: str) -> list[tuple[str, str]]:
        """(input string, target string) per example."""
        return [self.task.template(example) for example in self.splits[split]]

    def classification(self, split: str) -> tuple[list[tuple[str, ...]], list[float | int]]:
        """The classification view: a text (or text pair) and a label id (STS-B: its score)."""
        fields = self.task.classification_fields
        if fields is None:
            raise ValueError(f"{self.task.name} has no classification view; train it text-to-text with a T5 model.")
        examples = self.splits[split]
        return [tuple(e[f] for f in fields) for e in examples], [e["label"] for e in examples]

    def score(self, split: str, predictions: list[str]) -> dict:
        return compute_metrics(self.task, predictions, self.splits[split])

    @property
    def num_labels(self) -> int:
        """Classification head size: the label count, or 1 for a regression (STS-B)."""
        if self.task.labels is None:
            if self.task.name != "stsb":
                raise ValueError(f"{self.task.name} has free-text answers; train it text-to-text with a seq2seq model (T5).")
            return 1
        return len(self.task.labels)


def load_task(name: str, data_dir: str | Path | None = None, *, seed: int = PAPER_SEED,
              train_size: int | None = None) -> TaskData:
    """A task's paper splits from the hub (``data_dir=None``), original files or a hub export."""
    task = get_task(name)
    splits = paper_splits(task, load_raw(task, data_dir), seed)
    splits["train"] = low_resource(splits["train"], train_size, seed)
    return TaskData(task, splits)


__all__ = ["TASKS", "DataFileError", "Task", "TaskData", "compute_metrics", "get_task", "load_task", "low_resource",
           "paper_splits"]
