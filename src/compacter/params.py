"""Exact trained-parameter accounting, by group (SPEC §3)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn

from .container import container_of
from .inventory import GROUPS, parameter_groups


@dataclass
class ParameterReport:
    method: str
    trainable: int
    total: int  # the base model's parameters, tied embeddings counted once
    percent: float  # trainable / total × 100
    groups: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_text(self) -> str:
        lines = [f"method     {self.method}", f"trainable  {self.trainable:,}", f"total      {self.total:,}",
                 f"percent    {self.percent:.4f}%"]
        lines += [f"  {group:<13}{count:>14,}" for group, count in self.groups.items()]
        return "\n".join(lines)


def count_parameters(model: nn.Module, name: str | None = None) -> ParameterReport:
    """How many parameters task ``name`` (default: the active task) trains, in total and by group (GROUPS)."""
    container = container_of(model)
    config = container.task(name).config
    params = dict(model.named_parameters())
    by_group = {group: 0 for group in GROUPS}
    for param_name, group in parameter_groups(model, name).items():
        by_group[group] += params[param_name].numel()
    trainable = sum(by_group.values())
    total = container.base_parameter_count
    return ParameterReport(config.name, trainable, total, 100.0 * trainable / total,
                           {g: c for g, c in by_group.items() if c})
