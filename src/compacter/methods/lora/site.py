"""LoRA at a linear layer: ``y + B A x`` (B pre-scaled by alpha / r), one bank of A and B per layer shape."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ...routing import per_row
from ..base import SiteKind, TaskModules


class LoraBank(nn.Module):
    """The A (r × in) and B (out × r) of ``count`` layers of one shape; A as nn.Linear's init (PEFT's), B zero."""

    def __init__(self, count: int, in_features: int, out_features: int, r: int, **factory) -> None:
        super().__init__()
        self.count = count
        self.A = nn.Parameter(torch.empty(count, r, in_features, **factory))
        self.B = nn.Parameter(torch.zeros(count, out_features, r, **factory))
        bound = 1 / math.sqrt(in_features)  # kaiming_uniform_(a=sqrt(5)) of an (r, in) weight
        nn.init.uniform_(self.A, -bound, bound)

    def extra_repr(self) -> str:
        return f"count={self.count}, r={self.A.shape[1]}, {self.A.shape[2]}→{self.B.shape[1]}"


class LoraSlot(NamedTuple):
    bank: LoraBank
    index: int
    scaling: float
    dropout: float


class LoraWeights(NamedTuple):
    A: torch.Tensor  # (r, in)
    B: torch.Tensor  # (out, r), scaled
    dropout: float
    owner: nn.Module  # whose .training says whether dropout applies


class StackedLora(NamedTuple):
    A: torch.Tensor  # (sum of the routed tasks' r, in)
    B: torch.Tensor  # (out, sum r)
    mask: torch.Tensor  # (tasks, sum r): each row of a batch keeps its own task's block
    dropout: float
    owner: nn.Module


class Lora(SiteKind):
    name = "lora"

    def prepare(self, task: TaskModules, dtype: torch.dtype, device: torch.device) -> dict[str, LoraWeights]:
        slots: dict[str, LoraSlot] = task.sites[self]
        views = {}
        for slot in slots.values():
            if slot.bank not in views:  # one scale, cast and move per bank
                views[slot.bank] = (slot.bank.A.to(device, dtype).unbind(0),
                                    (slot.bank.B * slot.scaling).to(device, dtype).unbind(0))
        return {key: LoraWeights(views[slot.bank][0][slot.index], views[slot.bank][1][slot.index], slot.dropout, task)
                for key, slot in slots.items()}

    def forward(self, value: torch.Tensor, inputs: tuple, weights: Any, rows: torch.Tensor | None = None) -> torch.Tensor:
        x = inputs[0]
        if weights.dropout and weights.owner.training:
            x = F.dropout(x, weights.dropout, training=True)
        inner = F.linear(x, weights.A)
        if rows is not None:
            inner = inner * per_row(weights.mask, rows, inner)
        return value + F.linear(inner, weights.B)

    def stack(self, parts: list[LoraWeights | None]) -> StackedLora | None:
        present = [(owner, part) for owner, part in enumerate(parts) if part is not None]
        if not present:
            return None
        dropouts = {part.dropout for _, part in present}
        if len(dropouts) > 1:
            raise ValueError(f"The routed LoRA tasks use different lora_dropout values {sorted(dropouts)}: one batch "
                             "applies one dropout to its inputs. Route tasks of one lora_dropout together.")
        sizes = [part.A.shape[0] for _, part in present]
        mask = present[0][1].A.new_zeros(len(parts), sum(sizes))
        start = 0
        for (owner, _), size in zip(present, sizes):
            mask[owner, start: start + size] = 1
            start += size
        return StackedLora(torch.cat([part.A for _, part in present]), torch.cat([part.B for _, part in present], dim=1),
                           mask, dropouts.pop(), present[0][1].owner)


LORA = Lora()
