"""(IA)³ at a linear layer: its output (or, for a feed-forward layer, its input) times a learned vector."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from ...routing import per_row
from ..base import SiteKind, TaskModules


class ScaleBank(nn.Module):
    """The scaling vectors of ``count`` layers of one width, initialised to ones (the identity)."""

    def __init__(self, count: int, width: int, **factory) -> None:
        super().__init__()
        self.count = count
        self.scales = nn.Parameter(torch.ones(count, width, **factory))

    def extra_repr(self) -> str:
        return f"count={self.count}, width={self.scales.shape[1]}"


class ScaleSlot(NamedTuple):
    bank: ScaleBank
    index: int


class Scale(SiteKind):
    def __init__(self, where: str) -> None:
        self.where = where
        self.name = f"ia3-{where}"

    def prepare(self, task: TaskModules, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
        slots: dict[str, ScaleSlot] = task.sites[self]
        views = {}
        for slot in slots.values():
            if slot.bank not in views:
                views[slot.bank] = slot.bank.scales.to(device, dtype).unbind(0)
        return {key: views[slot.bank][slot.index] for key, slot in slots.items()}

    def forward(self, value: torch.Tensor, inputs: tuple, weights: Any, rows: torch.Tensor | None = None) -> torch.Tensor:
        return value * (weights if rows is None else per_row(weights, rows, value))

    def stack(self, parts: list[torch.Tensor | None]) -> torch.Tensor | None:
        present = [part for part in parts if part is not None]
        if not present:
            return None
        ones = torch.ones_like(present[0])  # a task without a vector here: its rows unscaled
        return torch.stack([ones if part is None else part for part in parts])


IA3_OUTPUT = Scale("output")
IA3_INPUT = Scale("input")
