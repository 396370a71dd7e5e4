"""Bottleneck adapters: Houlsby, Pfeiffer, AdapterDrop, low-rank, PHM-Adapter, Compacter(++).

All of them are one config: what differs is the projection (dense, low-rank, PHM with full or
factored B), whether A is shared, which sublayers and blocks get an adapter, and what the adapter
reads (``adapter_input``): the sublayer's output ``h`` (the paper's), or, on a BERT-style sublayer
``LN(dropout(dense(·)) + x)``, the layer-normed sum ``LN(h + x)`` (AdapterHub's ``original_ln_before``,
its Pfeiffer and Compacter++ default); the adapter's residual is ``h`` either way.
"""

from __future__ import annotations

import inspect
import itertools
import re
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..architectures import SUBLAYERS
from ..devices import ForwardWrapper, execution_device, loads_own_parameters
from ..layers import ACTIVATIONS, ProjectionBank, SharedHypercomplexWeights, bottleneck_transposed, check_divisible
from ..model_anatomy import is_norm
from ..placement import Site, find_sites, resolve_spec
from ..routing import per_row
from .base import MethodConfig, SiteKind, TaskModules
from .settings import setting


class SublayerSum(ForwardWrapper):
    """What an adapter that reads ``LN(h + x)`` needs of a BERT-style sublayer output module (``forward(
    hidden_states, input_tensor)``: dense, dropout, ``LayerNorm(· + input_tensor)``): its layer norm, and its
    input ``x``, held from the module's call until it returns. It wraps the module's forward as the sites do
    (devices.ForwardWrapper: inside an accelerate hook when there is one), not with torch hooks."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__(module, "_old_forward" if loads_own_parameters(module) else "forward")
        self.norm = module.LayerNorm
        self.input: torch.Tensor | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.input = args[1] if len(args) > 1 else kwargs["input_tensor"]
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.input = None

    def normed(self, hidden: torch.Tensor) -> torch.Tensor:
        """``LN(h + x)``, by the module itself: a task's own layer norm copy (base_copies.py) applies, per row too."""
        return self.norm(hidden + self.input)


class AdapterSlot(NamedTuple):
    """The adapter at one site: slot ``index`` of a down and an up bank (and, for one that reads ``LN(h + x)``,
    the sublayer it reads)."""

    down: ProjectionBank
    up: ProjectionBank
    index: int
    activation: str
    sublayer: SublayerSum | None = None


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
        return self.adapt(value, None, weights, rows)

    @staticmethod
    def adapt(value: torch.Tensor, source: torch.Tensor | None, weights: Any, rows: torch.Tensor | None) -> torch.Tensor:
        """``value + U(act(D(source)))`` (``source`` None: ``value``), per row of a routed batch with ``rows``."""
        if rows is None:
            return bottleneck_transposed(value, *weights, source=source)
        inner = F.linear(value if source is None else source, weights.down_weight, weights.down_bias)
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


class ReadsNormedSum(NamedTuple):
    adapter: BottleneckWeights | StackedBottlenecks
    sublayer: SublayerSum


class NormedSumBottleneck(Bottleneck):
    """``h + U(act(D(LN(h + x))))`` on a BERT-style sublayer's output ``h`` (whose layer norm then takes it plus
    ``x``): AdapterHub's ``original_ln_before=True``."""

    name = "bottleneck_normed_sum"

    def prepare(self, task: TaskModules, dtype: torch.dtype, device: torch.device) -> dict[str, ReadsNormedSum]:
        slots: dict[str, AdapterSlot] = task.sites[self]
        return {key: ReadsNormedSum(adapter, slots[key].sublayer)
                for key, adapter in super().prepare(task, dtype, device).items()}

    def forward(self, value: torch.Tensor, inputs: tuple, weights: Any, rows: torch.Tensor | None = None) -> torch.Tensor:
        return self.adapt(value, weights.sublayer.normed(value), weights.adapter, rows)

    def stack(self, parts: list[ReadsNormedSum | None]) -> ReadsNormedSum | None:
        adapters = super().stack([None if part is None else part.adapter for part in parts])
        sublayer = next((part.sublayer for part in parts if part is not None), None)
        return None if adapters is None else ReadsNormedSum(adapters, sublayer)


BOTTLENECK = Bottleneck()
NORMED_SUM_BOTTLENECK = NormedSumBottleneck()
# what the adapter's down projection reads → the site kind that runs it
ADAPTER_INPUTS = {"sublayer_output": BOTTLENECK, "layer_normed_sum": NORMED_SUM_BOTTLENECK}


def bottleneck_slots(task: TaskModules) -> dict[str, AdapterSlot]:
    """A bottleneck task's adapters by site key, whatever they read."""
    return next((task.sites[kind] for kind in ADAPTER_INPUTS.values() if kind in task.sites), {})


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
    # what D reads: the sublayer's output h (the paper's), or the layer-normed sum LN(h + x) of a BERT-style sublayer
    # (AdapterHub's original_ln_before=True, its Pfeiffer and Compacter++ default); the residual is h either way
    adapter_input: str = setting("sublayer_output", choices=tuple(ADAPTER_INPUTS))
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
            kind = ADAPTER_INPUTS[self.adapter_input]
            for site, site_slots in zip(group, slots):
                sublayer = self._sublayer_sum(model, site, task) if kind is NORMED_SUM_BOTTLENECK else None
                for position, index in enumerate(site_slots):
                    if index is not None:
                        task.add_site(kind, site.name, AdapterSlot(down, up, index, self.activation, sublayer),
                                      position, site.calls)

    def _sublayer_sum(self, model: nn.Module, site: Site, task: TaskModules) -> SublayerSum:
        owner_name, _, child = site.name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        parameters = list(inspect.signature(type(owner).forward).parameters)[1:]  # the class's: forward may be wrapped
        if site.calls != 1 or not is_norm(getattr(owner, "LayerNorm", None)) or parameters[:2] != ["hidden_states",
                                                                                                    "input_tensor"]:
            raise ValueError(f"adapter_input='layer_normed_sum' reads LN(h + x) of a BERT-style sublayer output "
                             f"(forward(hidden_states, input_tensor): {child}, dropout, LayerNorm(· + input_tensor)); "
                             f"{owner_name or 'the model'} ({type(owner).__name__}) is not one. Use "
                             "adapter_input='sublayer_output' on this model.")
        sublayer = SublayerSum(owner)
        task.hooks.append(sublayer)
        return sublayer

