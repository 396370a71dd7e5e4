"""Bottleneck adapters: Houlsby, Pfeiffer, AdapterDrop, low-rank, PHM-Adapter, Compacter(++).

All of them are one config: what differs is the projection (dense, low-rank, PHM with full or
factored B), whether A is shared, and which sublayers and blocks get an adapter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from ..architectures import SUBLAYERS, Site, find_sites, resolve_spec
from ..layers import ACTIVATIONS, BottleneckAdapter, ProjectionBank, SharedHypercomplexWeights, check_divisible
from .base import CompacterModules, MethodConfig
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
        return [site for site in sites if site.layer >= self.skip_first_layers
                and (self.layers is None or site.layer in self.layers)]

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
        for width, group in by_width.items():
            k = self.bottleneck(width)
            options = {"n": self.n, "rank": self.rank, "shared": shared, **factory}
            down = ProjectionBank(len(group), width, k, self.projection, **options)
            up = ProjectionBank(len(group), k, width, self.projection, **options)
            suffix = "" if len(by_width) == 1 else f"_{width}"
            modules.add_module(f"down{suffix}", down)
            modules.add_module(f"up{suffix}", up)
            for index, site in enumerate(group):
                adapter = BottleneckAdapter(down, up, index, self.activation)
                site.module.add_module("adapter", adapter)
                site.module.register_forward_hook(_run_adapter)


def _run_adapter(module: nn.Module, args: tuple, output):
    return module.adapter(output)
