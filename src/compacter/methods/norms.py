"""Layer norms only: nothing added. The floor of every method that needs gradients through the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from .base import MethodConfig, TaskModules


@dataclass
class LayerNormsConfig(MethodConfig):
    kind: ClassVar[str] = "layer-norms"

    def attach(self, model: nn.Module, task: TaskModules) -> None:
        """Nothing to insert: apply() trains the layer norms (train_layer_norms=True)."""
