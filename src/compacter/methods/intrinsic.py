"""Intrinsic-SAID (Aghajanyan et al., 2021): train a d'-dimensional vector, not the model.

Every weight tensor θ_i of the model becomes ``θ_i = θ0_i + λ_i · P_i(θ_d)``: θ0_i is the frozen
pretrained tensor, P_i a Fastfood projection of its own (fastfood.py) and λ_i one trained scale
per tensor. θ_d has d' − m entries, so that with the m scales exactly d' numbers train
("structure aware"). With ``said=False`` there are no scales and θ_d has all d' entries (DID).

How it attaches: each projected parameter is taken out of its module(s) and kept, frozen, in
``model.compacter.tasks[name].intrinsic.base``; a forward pre-hook on each module that used it
sets the attribute to ``θ0 + λ·P(θ_d)`` before the module runs. Tensors of the same size are
projected together in one batched Fastfood call at the first use in a call into the model (kept in
the task's prepared tensors: without gradients while θ_d and λ are unchanged, cache.py), so tied
tensors (T5's embedding and lm_head) share one result. It trains the base's own weights, so it is alone on its model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..cache import PreparedTensors
from ..fastfood import Fastfood
from ..model_anatomy import head_parameter_names
from .base import MethodConfig, TaskModules
from .settings import setting


@dataclass
class IntrinsicSAIDConfig(MethodConfig):
    kind: ClassVar[str] = "intrinsic-said"
    trains_base_in_place: ClassVar[bool] = True
    builds_weights: ClassVar[bool] = True
    routable: ClassVar[bool] = False
    param_groups: ClassVar[dict[str, str]] = {"intrinsic": "intrinsic"}
    dimension: int = setting(20_000, at_least=1)  # d': every trained number, the m scales included
    said: bool = True  # one trained scale λ per weight tensor, taken out of the d' budget
    seed: int = setting(0, at_least=0, at_most=2**32 - 1)  # draws the Fastfood projections; a saved file rebuilds them
    train_layer_norms: bool = False  # the layer norms are projected like every other tensor

    def attach(self, model: nn.Module, task: TaskModules) -> None:
        heads = head_parameter_names(model) if self.train_head else set()
        targets: dict[int, nn.Parameter] = {}
        for name, param in model.named_parameters():
            if name not in heads:
                targets.setdefault(id(param), param)
        count = len(targets) if self.said else 0
        if self.dimension <= count:
            raise ValueError(f"dimension={self.dimension} leaves nothing to project: this model has {count} weight "
                             f"tensors and Intrinsic-SAID spends one scale on each. Choose dimension > {count} "
                             "(the paper uses 20000), or said=False for no scales.")
        projection = IntrinsicProjection(list(targets.values()), self.dimension - count, self.said, self.seed,
                                         task.prepared)
        task.add_module("intrinsic", projection)
        index_of = {key: index for index, key in enumerate(targets)}
        for module in model.modules():
            owned = [(name, index_of[id(p)]) for name, p in module._parameters.items()
                     if p is not None and id(p) in index_of]
            if not owned:
                continue
            for name, index in owned:
                del module._parameters[name]
                setattr(module, name, projection.base[index].detach())  # a plain attribute until the first forward
            task.hooks.append(module.register_forward_pre_hook(_WeightsSetter(projection, owned)))


class _WeightsSetter:
    """A module's forward pre-hook: its projected tensors, as attributes (a class, not a closure: deep-copyable)."""

    def __init__(self, projection: IntrinsicProjection, owned: list[tuple[str, int]]) -> None:
        self.projection, self.owned = projection, owned

    def __call__(self, module: nn.Module, args: tuple) -> None:
        for name, index in self.owned:
            setattr(module, name, self.projection.weight(index))


class IntrinsicProjection(nn.Module):
    """θ_d, the scales λ, the frozen θ0 tensors and one batched Fastfood per tensor size."""

    def __init__(self, tensors: list[nn.Parameter], size: int, said: bool, seed: int, prepared: PreparedTensors):
        super().__init__()
        reference = tensors[0]
        self.vector = nn.Parameter(torch.zeros(size, device=reference.device))
        self.scales = nn.Parameter(torch.ones(len(tensors), device=reference.device)) if said else None
        self.base = nn.ParameterList([nn.Parameter(t.detach(), requires_grad=False) for t in tensors])
        by_size: dict[int, list[int]] = {}
        for index, tensor in enumerate(tensors):
            by_size.setdefault(tensor.numel(), []).append(index)
        self.groups = list(by_size.values())
        self.group_of = {index: (group, row) for group, members in enumerate(self.groups)
                         for row, index in enumerate(members)}
        self.projections = nn.ModuleList(
            Fastfood(len(members), size, numel, seed=seed * 1_000_003 + group, device=reference.device)
            for group, (numel, members) in enumerate(by_size.items())
        )
        self.prepared = prepared  # the task's: the container refreshes it as each call starts

    def _build(self) -> list[torch.Tensor]:
        """θ0 + λ·P(θ_d) for every tensor, each size group projected in one batched Fastfood call."""
        weights: list[torch.Tensor | None] = [None] * len(self.base)
        for group, members in enumerate(self.groups):
            deltas = self.projections[group](self.vector)
            if self.scales is not None:
                deltas = deltas * self.scales[members].unsqueeze(1).to(deltas.dtype)
            # unbind, not indexing: indexing row by row would backpropagate a zero-filled copy of the whole group per row
            for index, delta in zip(members, deltas.unbind(0)):
                base = self.base[index]
                weights[index] = base + delta.view(base.shape).to(base.dtype)
        return weights

    def weight(self, index: int) -> torch.Tensor:
        """θ0 + λ·P(θ_d) for tensor ``index`` (tied owners get the same tensor)."""
        return self.prepared.get("intrinsic", self._build, counted=True)[index]
