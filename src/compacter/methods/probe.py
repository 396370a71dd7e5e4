"""Linear probe: only a new task head trains (a frozen-encoder baseline; not a method of the paper)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from .base import MethodConfig, TaskModules


@dataclass
class LinearProbeConfig(MethodConfig):
    kind: ClassVar[str] = "linear-probe"
    nothing_to_train_hint: ClassVar[str] = " (it trains only a new task head, and this model has none)"
    train_layer_norms: bool = False

    def attach(self, model: nn.Module, task: TaskModules) -> None:
        """Nothing to insert: apply() trains the head (train_head=True) and nothing else."""
