"""BitFit: train only biases; give every linear layer and norm that has none a zero bias."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..architectures import is_norm
from .base import MethodConfig, TaskModules


@dataclass
class BitFitConfig(MethodConfig):
    kind: ClassVar[str] = "bitfit"
    in_base: ClassVar[bool] = True
    train_layer_norms: bool = False
    add_missing_biases: bool = True  # T5 has no biases at all: the paper adds them (SPEC §2)

    def attach(self, model: nn.Module, task: TaskModules) -> None:
        for module in list(model.modules()):
            if self.add_missing_biases and getattr(module, "bias", "absent") is None:
                width = _bias_width(module)
                if width is not None:
                    ref = module.weight
                    # nn.Linear's forward already adds self.bias once it is a parameter
                    module.bias = nn.Parameter(torch.zeros(width, device=ref.device, dtype=ref.dtype))
            elif self.add_missing_biases and is_norm(module) and not hasattr(module, "bias"):
                ref = module.weight
                module.register_parameter("bias", nn.Parameter(torch.zeros_like(ref)))
                task.hooks.append(module.register_forward_hook(_add_bias))
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.requires_grad_(True)


def _bias_width(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.Conv1d):
        return module.out_channels
    return None


def _add_bias(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output + module.bias
