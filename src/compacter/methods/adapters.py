"""Bottleneck adapters: Houlsby, Pfeiffer, AdapterDrop, low-rank, PHM-Adapter, Compacter(++).

All of them are one config: what differs is the projection (dense, low-rank, PHM with full or
factored B), whether A is shared, and which sublayers and blocks get an adapter.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..architectures import SUBLAYERS
from ..devices import execution_device
from ..layers import ACTIVATIONS, ProjectionBank, SharedHypercomplexWeights, bottleneck_transposed, check_divisible
from ..placement import Site, find_sites, resolve_spec
from ..routing import per_row
from .base import MethodConfig, SiteKind, TaskModules
from .settings import setting


class AdapterSlot(NamedTuple):
    """The adapter at one site: slot ``index`` of a down and an up bank."""

    down: ProjectionBank
    up: ProjectionBank
    index: int
    activation: str


class BottleneckWeights(NamedTuple):
    """One site's adapter, its weights transposed ((in, out): what addmm reads; layers.bottleneck_transposed)."""

    down_transposed: torch.Tensor
    down_bias: torch.Tensor | None
    up_transposed: torch.Tensor
    up_bias: torch.Tensor | None
    activation: str


class StackedBottlenecks(NamedTuple):
    """The routed tasks' adapters at a site as one bottleneck: their down projections concatenated (rows), their up
    projections concatenated (columns), each task's up bias a row of ``up_bias``, and per activation a mask
    (tasks × bottleneck) that keeps each row of a batch to its own task's block."""

    down_weight: torch.Tensor
    down_bias: torch.Tensor
    up_weight: torch.Tensor
    up_bias: torch.Tensor
    masks: tuple[tuple[str, torch.Tensor], ...]


class Bottleneck(SiteKind):
    """``h + U(act(D(h)))`` on a sublayer's output (SPEC §1), D and U slots of banks built together."""

    name = "bottleneck"

    def build(self, task: TaskModules) -> dict[ProjectionBank, tuple[torch.Tensor, torch.Tensor | None]]:
        return task.prepared.get("banks", lambda: _build(_banks(task.sites[self])), counted=True)

    def prepare(self, task: TaskModules, dtype: torch.dtype, device: torch.device) -> dict[str, BottleneckWeights]:
        slots: dict[str, AdapterSlot] = task.sites[self]
        built = self.build(task)
        # one cast (and move) per bank, not one per site: autocast would cast each site's weight at each use; one
        # transpose per bank, not one per projection at each call
        views = {}
        for bank, (weights, biases) in built.items():
            transposed = weights.to(device, dtype).transpose(1, 2)
            views[bank] = (transposed.unbind(0),
                           (None,) * bank.count if biases is None else biases.to(device, dtype).unbind(0))
        return {key: BottleneckWeights(views[slot.down][0][slot.index], views[slot.down][1][slot.index],
                                       views[slot.up][0][slot.index], views[slot.up][1][slot.index], slot.activation)
                for key, slot in slots.items()}

    def forward(self, value: torch.Tensor, inputs: tuple, weights: Any, rows: torch.Tensor | None = None) -> torch.Tensor:
        if rows is None:
            return bottleneck_transposed(value, *weights)
        inner = F.linear(value, weights.down_weight, weights.down_bias)
        activated = sum(ACTIVATIONS[activation](inner) * per_row(mask, rows, inner) for activation, mask in weights.masks)
        return F.linear(activated, weights.up_weight) + value + per_row(weights.up_bias, rows, value)

    def stack(self, parts: list[BottleneckWeights | None]) -> StackedBottlenecks | None:
        present = [(owner, part) for owner, part in enumerate(parts) if part is not None]
        if not present:
            return None
        reference = present[0][1].down_transposed
        zero = reference.new_zeros(reference.shape[0])
        sizes = [part.down_transposed.shape[1] for _, part in present]
        masks: dict[str, torch.Tensor] = {}  # per activation: ones on the blocks of the tasks that use it
        start = 0
        for (owner, part), size in zip(present, sizes):
            masks.setdefault(part.activation, reference.new_zeros(len(parts), sum(sizes)))[owner, start: start + size] = 1
            start += size
        return StackedBottlenecks(
            torch.cat([part.down_transposed.t() for _, part in present]),
            torch.cat([part.down_bias if part.down_bias is not None else zero.new_zeros(part.down_transposed.shape[1])
                       for _, part in present]),
            torch.cat([part.up_transposed.t() for _, part in present], dim=1),
            torch.stack([part.up_bias if part is not None and part.up_bias is not None else zero for part in parts]),
            tuple(masks.items()))


BOTTLENECK = Bottleneck()


def _build(banks: list[ProjectionBank]) -> dict[ProjectionBank, tuple[torch.Tensor, torch.Tensor | None]]:
    """Each bank's (weights, biases) built in fp32 from the fp32 masters: under autocast the build's own matmuls
    would cast every factor to the low precision (and back in the backward pass); one cast of the result is cheaper."""
    device_type = banks[0].bias.device.type if banks[0].bias is not None else next(banks[0].parameters()).device.type
    with torch.autocast(device_type, enabled=False):
        return {bank: (bank.build_weights(), bank.bias) for bank in banks}


def _banks(slots: dict[str, AdapterSlot]) -> list[ProjectionBank]:
    return list(dict.fromkeys(bank for slot in slots.values() for bank in (slot.down, slot.up)))


@dataclass
class AdapterConfig(MethodConfig):
    kind: ClassVar[str] = "adapter"
    builds_weights: ClassVar[bool] = True
    param_groups: ClassVar[dict[str, str]] = {"shared": "shared"}
    reduction_factor: float = setting(32.0, above=0)  # bottleneck k = hidden size / reduction_factor
    bottleneck_size: int | None = setting(None, at_least=1)  # overrides reduction_factor when set
    projection: str = setting("dense", choices=("dense", "low_rank", "phm"))
    n: int = setting(4, at_least=1)  # hypercomplex dimension (phm)
    rank: int | None = setting(None, at_least=1)  # low_rank: rank of u vᵀ; phm: rank of B_i = s tᵀ, None for full B_i
    share_A: bool = False  # phm: one A for every projection of the model (Compacter)
    sublayers: list[str] = setting(factory=lambda: list(SUBLAYERS), choices=SUBLAYERS, non_empty=True)
    skip_first_layers: int = setting(0, at_least=0)  # AdapterDrop: no adapter in the first blocks of each stack
    layers: list[int] | None = setting(None, at_least=0)  # only these block indices (of every stack)
    activation: str = "gelu"
    attention_output: str | None = None  # regex of module names; only for unknown architectures
    feed_forward_output: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {self.activation!r}; choose one of {sorted(ACTIVATIONS)}.")
        for name in ("attention_output", "feed_forward_output"):
            pattern = getattr(self, name)
            try:
                re.compile(pattern or "")
            except re.error as error:
                raise ValueError(f"{name} must be a regular expression of module names, got {pattern!r} "
                                 f"({error}).") from None
        if self.projection == "low_rank" and not self.rank:
            self.rank = 1

    def bottleneck(self, width: int) -> int:
        size = self.bottleneck_size or int(width // self.reduction_factor)
        if size < 1:
            raise ValueError(f"A hidden size of {width} with reduction_factor={self.reduction_factor} leaves no "
                             "bottleneck; lower reduction_factor or set bottleneck_size.")
        return size

    def selected_sites(self, model: nn.Module) -> list[Site]:
        spec = resolve_spec(model, self.attention_output, self.feed_forward_output)
        sites = find_sites(model, spec, tuple(self.sublayers))
        if self.layers is not None:
            positions = {layer for site in sites for layer in site.layers}
            missing = sorted(set(self.layers) - positions)
            if missing:
                raise ValueError(f"layers lists {missing}, but this model's blocks are at layer positions "
                                 f"{min(positions)}-{max(positions)}: choose layers among those.")
        return [site for site in sites if any(self.selects(layer) for layer in site.layers)]

    def selects(self, layer: int) -> bool:
        """Whether the block at this layer position gets an adapter."""
        return layer >= self.skip_first_layers and (self.layers is None or layer in self.layers)

    def attach(self, model: nn.Module, task: TaskModules) -> None:
        sites = self.selected_sites(model)
        if not sites:
            raise ValueError("The layer selection (layers / skip_first_layers) leaves no block with an adapter.")
        # One bank per hidden size, on the (execution) device of its first site: the banks, their names in a saved
        # file and their initial values do not depend on how a model is spread over devices (device_map="auto") or
        # offloaded; a site on another device gets its built weights moved there (container.py). Trained
        # parameters are fp32 whatever the base's dtype.
        groups: dict[int, list[Site]] = {}
        for site in sites:
            groups.setdefault(site.width, []).append(site)
        shared = None
        if self.projection == "phm":
            for width in groups:
                check_divisible(self.n, width, self.bottleneck(width))
            if self.share_A:
                shared = SharedHypercomplexWeights(self.n, device=execution_device(model, sites[0].name),
                                                   dtype=torch.float32)
                task.add_module("shared", shared)
        for number, (width, group) in enumerate(groups.items()):
            k = self.bottleneck(width)
            device = execution_device(model, group[0].name)
            # One bank slot per selected layer position: a module that runs at several positions
            # (ALBERT's shared block) gets a slot per position, none where that position has no adapter.
            slot_count = itertools.count()
            slots = [[next(slot_count) if self.selects(layer) else None for layer in site.layers] for site in group]
            options = {"n": self.n, "rank": self.rank, "shared": shared, "device": device, "dtype": torch.float32}
            count = next(slot_count)
            down = ProjectionBank(count, width, k, self.projection, **options)
            up = ProjectionBank(count, k, width, self.projection, **options)
            suffix = "" if len(groups) == 1 else f"_{number}"
            task.add_module(f"down{suffix}", down)
            task.add_module(f"up{suffix}", up)
            for site, site_slots in zip(group, slots):
                for position, index in enumerate(site_slots):
                    if index is not None:
                        task.add_site(BOTTLENECK, site.name, AdapterSlot(down, up, index, self.activation), position,
                                      site.calls)

