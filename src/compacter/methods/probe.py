"""Linear probe: only a new task head trains (a frozen-encoder baseline; not a method of the paper)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from .base import CompacterModules, MethodConfig


@dataclass
class LinearProbeConfig(MethodConfig):
    kind: ClassVar[str] = "linear-probe"
    train_layer_norms: bool = False

    def attach(self, model: nn.Module, modules: CompacterModules) -> None:
        """Nothing to insert: apply() trains the head (train_head=True) and nothing else."""
