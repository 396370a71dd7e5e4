"""Full fine-tuning: every parameter of the model trains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from .base import CompacterModules, MethodConfig


@dataclass
class FullConfig(MethodConfig):
    kind: ClassVar[str] = "full"
    train_output_layer: bool = True

    def attach(self, model: nn.Module, modules: CompacterModules) -> None:
        model.requires_grad_(True)
