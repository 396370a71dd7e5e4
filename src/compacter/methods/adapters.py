"""Bottleneck adapters: Houlsby, Pfeiffer, AdapterDrop, low-rank, PHM-Adapter, Compacter(++).

All of them are one config: what differs is the projection (dense, low-rank, PHM with full or
factored B), whether A is shared, and which sublayers and blocks get an adapter.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import ClassVar

from torch import nn

from ..architectures import SUBLAYERS, Site, find_sites, resolve_spec
from ..layers import ACTIVATIONS, BottleneckAdapter, ProjectionBank, SharedHypercomplexWeights, check_divisible
from .base import CompacterModules, MethodConfig


@dataclass
class AdapterConfig(MethodConfig):
    kind: ClassVar[str] = "adapter"
    reduction_factor: float = 32.0  # bottleneck k = hidden size / reduction_factor
    bottleneck_size: int | None = None  # overrides reduction_factor when set
    projection: str = "dense"  # "dense", "low_rank" or "phm"
    n: int = 4  # hypercomplex dimension (phm)
    rank: int | None = None  # low_rank: rank of u vᵀ; phm: rank of B_i = s tᵀ, None for full B_i
    share_A: bool = False  # phm: one A for every projection of the model (Compacter)
    sublayers: list[str] = field(default_factory=lambda: list(SUBLAYERS))
    skip_first_layers: int = 0  # AdapterDrop: no adapter in the first blocks of each stack
    layers: list[int] | None = None  # only these block indices (of every stack)
    activation: str = "gelu"
    attention_output: str | None = None  # regex of module names; only for unknown architectures
    feed_forward_output: str | None = None

    def __post_init__(self) -> None:
        unknown = set(self.sublayers) - set(SUBLAYERS)
        if unknown or not self.sublayers:
            raise ValueError(f"sublayers must be a non-empty subset of {list(SUBLAYERS)}, got {self.sublayers}.")
        if self.projection not in ("dense", "low_rank", "phm"):
            raise ValueError(f"projection must be 'dense', 'low_rank' or 'phm', got {self.projection!r}.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {self.activation!r}; choose one of {sorted(ACTIVATIONS)}.")
        if self.projection == "low_rank" and not self.rank:
            self.rank = 1
        if self.reduction_factor <= 0 or (self.bottleneck_size is not None and self.bottleneck_size < 1):
            raise ValueError("reduction_factor and bottleneck_size must be positive.")

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

    def attach(self, model: nn.Module, modules: CompacterModules) -> None:
        sites = self.selected_sites(model)
        if not sites:
            raise ValueError("The layer selection (layers / skip_first_layers) leaves no block with an adapter.")
        reference = next(model.parameters())
        factory = {"device": reference.device, "dtype": reference.dtype}
        by_width: dict[int, list[Site]] = {}
        for site in sites:
            by_width.setdefault(site.width, []).append(site)
        shared = None
        if self.projection == "phm":
            for width in by_width:
                check_divisible(self.n, width, self.bottleneck(width))
            if self.share_A:
                shared = SharedHypercomplexWeights(self.n, **factory)
                modules.add_module("shared", shared)
        counted = []
        for width, group in by_width.items():
            k = self.bottleneck(width)
            # One bank slot per selected layer position: a module that runs at several positions
            # (ALBERT's shared block) gets a slot per position, None where that position has no adapter.
            slot_count = itertools.count()
            slots = [[next(slot_count) if self.selects(layer) else None for layer in site.layers] for site in group]
            count = next(slot_count)
            options = {"n": self.n, "rank": self.rank, "shared": shared, **factory}
            down = ProjectionBank(count, width, k, self.projection, **options)
            up = ProjectionBank(count, k, width, self.projection, **options)
            suffix = "" if len(by_width) == 1 else f"_{width}"
            modules.add_module(f"down{suffix}", down)
            modules.add_module(f"up{suffix}", up)
            for site, site_slots in zip(group, slots):
                adapter = BottleneckAdapter(down, up, site_slots[0] if site.calls == 1 else site_slots, self.activation)
                site.module.add_module("adapter", adapter)
                site.module.register_forward_hook(_run_adapter)
                if site.calls > 1:
                    counted.append(adapter)
        modules.counted_adapters = tuple(counted)  # attach.start_forward resets their call counts


def _run_adapter(module: nn.Module, args: tuple, output):
    if isinstance(output, tuple):  # e.g. an MoE block's (hidden_states, router_logits) in transformers 4.57
        return (module.adapter(output[0]), *output[1:])
    return module.adapter(output)
