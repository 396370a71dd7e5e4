"""Bottleneck adapters: Houlsby, Pfeiffer, AdapterDrop, low-rank, PHM-Adapter, Compacter(++).

All of them are one config: what differs is the projection (dense, low-rank, PHM with full or
factored B), whether A is shared, and which sublayers and blocks get an adapter.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..architectures import SUBLAYERS, Site, find_sites, resolve_spec
from ..devices import execution_device
from ..layers import ACTIVATIONS, ProjectionBank, SharedHypercomplexWeights, check_divisible
from .base import MethodConfig, TaskModules
from .settings import setting


@dataclass
class AdapterConfig(MethodConfig):
    kind: ClassVar[str] = "adapter"
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
                        task.add_adapter(site.name, down, up, index, self.activation, position, site.calls)

