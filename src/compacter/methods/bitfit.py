"""BitFit: train only biases; give every linear layer and norm that has none a zero bias.

The authors' T5 (which has no biases of its own) gets them on every linear layer, on the layer
norms inside the blocks and on the output layer, but not on the two final layer norms of the
encoder and decoder stacks: 280,960 biases on T5-base, the paper's 0.126%.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..model_anatomy import is_norm
from .base import MethodConfig, TaskModules


@dataclass
class BitFitConfig(MethodConfig):
    kind: ClassVar[str] = "bitfit"
    trains_base_in_place: ClassVar[bool] = True
    routable: ClassVar[bool] = False
    train_layer_norms: bool = False
    add_missing_biases: bool = True  # T5 has no biases at all: the paper adds them (SPEC §2)

    def attach(self, model: nn.Module, task: TaskModules) -> None:
        for name, module in list(model.named_modules()):
            if self.add_missing_biases and getattr(module, "bias", "absent") is None:
                width = _bias_width(module)
                if width is not None:
                    ref = module.weight
                    # nn.Linear's forward already adds self.bias once it is a parameter
                    module.bias = nn.Parameter(torch.zeros(width, device=ref.device, dtype=ref.dtype))
            elif self.add_missing_biases and is_norm(module) and not hasattr(module, "bias") and _in_a_block(name):
                ref = module.weight
                module.register_parameter("bias", nn.Parameter(torch.zeros_like(ref)))
                task.hooks.append(module.register_forward_hook(_add_bias))
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.requires_grad_(True)


def _in_a_block(name: str) -> bool:
    """Inside a numbered block (``encoder.block.3.layer.1.layer_norm``), not a stack's final norm."""
    return re.search(r"\.\d+\.", f".{name}.") is not None


def _bias_width(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.Conv1d):
        return module.out_channels
    return None


def _add_bias(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output + module.bias
