"""Full fine-tuning: every parameter of the model trains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from .base import MethodConfig, TaskModules


@dataclass
class FullConfig(MethodConfig):
    kind: ClassVar[str] = "full"
    trains_base_in_place: ClassVar[bool] = True
    routable: ClassVar[bool] = False
    train_output_layer: bool = True

    def attach(self, model: nn.Module, task: TaskModules) -> None:
        model.requires_grad_(True)
