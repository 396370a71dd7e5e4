"""Base parameters that tasks train as copies of their own (layer norms, a task head, the output layer).

For the duration of a call into the model the parameter is swapped for the running task's copy
(cast to the base's dtype once per change of the copy: the copies are fp32 master weights), and
swapped back afterwards, so that outside a call the base model is exactly as it was loaded. One task
runs the whole call: every holder is swapped once, at the call boundary (:meth:`BaseCopies.swap_in_all`).
The modules that hold such a parameter are also hooked (once, however many tasks copy it), and swap
for the duration of their own forward when the boundary did not: gradient checkpointing recomputes
blocks after the call returned, accelerate loads an offloaded module's parameters inside its own hook
(devices.hook_around_forward), and a routed batch needs each row's value.

Under routing, a linear layer or norm whose parameter differs per row is recomputed row by row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from .devices import hook_around_forward, loads_own_parameters
from .model_anatomy import is_norm
from .routing import per_row

if TYPE_CHECKING:
    from .container import CompacterModules
    from .methods.base import TaskModules

ROUTABLE_HOLDERS = (nn.Linear, nn.LayerNorm, nn.RMSNorm)


@dataclass(frozen=True)
class Override:
    """A base parameter that tasks may replace with their own copy, and where the base model holds it."""

    key: str  # the parameter's name in the base model (the first, when tied)
    group: str  # "layer_norms", "head" or "output_layer"
    holders: tuple[tuple[nn.Module, str], ...]  # (module, attribute) pairs that hold it


class BaseCopies:
    """The hooks that swap tasks' copies of base parameters in, and the overrides they serve."""

    def __init__(self, container: CompacterModules) -> None:
        self.container = container
        self.overrides: dict[str, Override] = {}  # by key: the base parameter's name
        self.held: dict[nn.Module, list[tuple[str, Override]]] = {}  # holder module → (attribute, override)
        self.handles: dict[nn.Module, list] = {}
        # what the boundary swapped for the call in progress: holder → its own parameters, put back at the end (the
        # holders' own wrappers do nothing while they are in it)
        self.swapped_at_boundary: dict[nn.Module, dict[str, torch.Tensor]] = {}
        self.loaded_by_accelerate: set[nn.Module] = set()  # holders whose parameters exist only inside their forward

    def add(self, overrides: list[Override]) -> None:
        for override in overrides:
            if override.key in self.overrides:
                continue
            self.overrides[override.key] = override
            for module, attribute in override.holders:
                self.held.setdefault(module, []).append((attribute, override))
                if module not in self.handles:  # inside accelerate's hook, if it loads the module's own
                    self.handles[module] = hook_around_forward(module, self.swap_in, self.swap_out,
                                                               skip_while_in=self.swapped_at_boundary)
                    if loads_own_parameters(module):
                        self.loaded_by_accelerate.add(module)

    def keep_only(self, used: set[str]) -> None:
        """Unhook the overrides that no task copies any more."""
        for key in [key for key in self.overrides if key not in used]:
            for module, _ in self.overrides.pop(key).holders:
                self.held[module] = [(a, o) for a, o in self.held[module] if o.key != key]
                if not self.held[module]:
                    del self.held[module]
                    for handle in self.handles.pop(module):
                        handle.remove()
                    self.loaded_by_accelerate.discard(module)

    def remove_all(self) -> None:
        for handles in self.handles.values():
            for handle in handles:
                handle.remove()
        self.handles, self.loaded_by_accelerate = {}, set()

    def unroutable_holder(self, key: str) -> str | None:
        """The type of a module holding ``key`` that cannot take a different value per row, if there is one."""
        return next((type(m).__name__ for m, _ in self.overrides[key].holders
                     if not isinstance(m, ROUTABLE_HOLDERS) and not is_norm(m)), None)

    def swap_in_all(self) -> None:
        """A call into the model starts: swap the running task's copies into every holder that can take them now
        (not one that accelerate loads in its own hook, nor any of a model that FSDP shards: each unit sets its
        gathered parameters on its modules as it runs), once, instead of at each holder's every forward."""
        running = self.container.running
        if running is None or torch.compiler.is_compiling() or isinstance(self.container._model, FSDPModule):
            return
        plan = running.prepared.get("swaps at the boundary", lambda: self._boundary_plan(running))
        saved = self.swapped_at_boundary
        for module, swaps in plan:  # (the plan is computed first: a failure in it leaves the model untouched)
            parameters, own = module._parameters, {}
            for attribute, value in swaps.items():  # (a loop, not a comprehension: no function call per holder)
                own[attribute] = parameters[attribute]
                parameters[attribute] = value
            saved[module] = own

    def _boundary_plan(self, task: TaskModules) -> list[tuple[nn.Module, dict[str, torch.Tensor]]]:
        plan = []
        for module in self.held:
            if module not in self.loaded_by_accelerate and not any(
                    isinstance(module._parameters[attribute], DTensor) for attribute, _ in self.held[module]):
                # the per-module hooks' own swaps: a block that gradient checkpointing recomputes after the call
                # returned swaps in the very tensors its forward used
                swaps = task.prepared.get(("swaps", module), lambda module=module: self._swaps(module, task))
                if swaps:
                    plan.append((module, swaps))
        return plan

    def swap_out_all(self) -> None:
        """The call returned (or raised): every holder gets its own parameters back."""
        for module, own in self.swapped_at_boundary.items():
            module._parameters.update(own)
        self.swapped_at_boundary.clear()  # (cleared, not replaced: the holders' wrappers hold it)

    def swap_in(self, module: nn.Module, args: tuple) -> None:
        container, swaps = self.container, {}
        running = container.running
        if running is not None:
            container.ensure_call()
            # what this module swaps in for the running task, kept with the task's prepared tensors (per call with
            # gradients, while the copies are unchanged without)
            swaps = running.prepared.get(("swaps", module), lambda: self._swaps(module, running))
        elif container.routing is not None and container.enabled:
            container.ensure_call()
            if not _recomputes_routed(module):  # a norm of the model's own: it broadcasts a weight per row
                for attribute, override in self.held[module]:
                    values = self._routed_values(override, module._parameters[attribute])
                    if values is not None:
                        swaps[attribute] = per_row(values, container.routing.row_index(args[0]), args[0])
        # all computed first: a failure above leaves the module untouched
        module.__dict__.setdefault("_compacter_saved", []).append({a: module._parameters[a] for a in swaps})
        module._parameters.update(swaps)

    def _swaps(self, module: nn.Module, task: TaskModules) -> dict[str, torch.Tensor]:
        swaps = {}
        for attribute, override in self.held[module]:
            value = task.base_value(override.key, module._parameters[attribute])
            if value is not None:
                swaps[attribute] = value
        return swaps

    def swap_out(self, module: nn.Module, args: tuple, output: Any) -> Any:
        stack = module.__dict__.get("_compacter_saved")
        if stack:
            module._parameters.update(stack.pop())
        container = self.container
        if container.routing is not None and container.enabled and _recomputes_routed(module):
            return self._recompute_routed(module, args[0], output)
        return output

    def _routed_values(self, override: Override, base: torch.Tensor) -> torch.Tensor | None:
        """(routed tasks, *shape): each routed task's copy of the parameter, or the base's own value."""
        tasks = self.container.tasks
        values = [tasks[name].base_value(override.key, base) for name in self.container.routing.tasks]
        if all(v is None for v in values):
            return None
        values = [base if v is None else v for v in values]
        if any(v.shape != base.shape for v in values):  # heads of other label counts (heads.py): zero rows to the largest
            largest = max(v.shape[0] for v in values)
            values = [v if v.shape[0] == largest else F.pad(v, (0, 0) * (v.dim() - 1) + (0, largest - v.shape[0]))
                      for v in values]
        return torch.stack(values)

    def _recompute_routed(self, module: nn.Module, hidden: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """A linear layer or torch norm whose parameters differ per row: its output computed row by row."""
        routing = self.container.routing
        values = {}
        for attribute, override in self.held[module]:
            stacked = self._routed_values(override, module._parameters[attribute])
            if stacked is not None:
                values[attribute] = stacked
        if not values:
            return output
        rows = routing.row_index(hidden)
        weight = values.get("weight", _broadcast(module, "weight", len(routing.tasks)))
        bias = values.get("bias", _broadcast(module, "bias", len(routing.tasks)))
        if isinstance(module, nn.Linear):
            result = torch.einsum("b...i,boi->b...o", hidden, weight.index_select(0, rows).to(hidden.dtype))
            result = result if bias is None else result + per_row(bias, rows, result).to(result.dtype)
            padding = self._padding(module, result)
            return result if padding is None else result + per_row(padding, rows, result)
        if isinstance(module, nn.LayerNorm):
            normed = F.layer_norm(hidden, module.normalized_shape, None, None, module.eps)
        else:
            normed = F.rms_norm(hidden, module.normalized_shape, None, module.eps)
        result = normed * per_row(weight.flatten(1), rows, normed).to(normed.dtype) if weight is not None else normed
        return result if bias is None else result + per_row(bias.flatten(1), rows, result).to(result.dtype)

    def _padding(self, module: nn.Linear, result: torch.Tensor) -> torch.Tensor | None:
        """(routed tasks, outputs): 0 for each routed task's own outputs, -inf beyond them, where the tasks' heads
        have other sizes (heads.py); None where they all have one. Built once per routing, on the device (no sync)."""
        routing = self.container.routing
        key = ("padding", module, result.dtype, result.device)
        if key in routing.cache:
            return routing.cache[key]
        weight = next((override.key for attribute, override in self.held[module] if attribute == "weight"), None)
        copies = [None if weight is None else self.container.tasks[name].base_copy(weight) for name in routing.tasks]
        sizes = [module.weight.shape[0] if copy is None else copy.shape[0] for copy in copies]
        padding = None
        if len(set(sizes)) > 1:
            padding = torch.zeros(len(sizes), max(sizes), dtype=result.dtype, device=result.device)
            for index, size in enumerate(sizes):
                padding[index, size:] = float("-inf")
        if not torch.compiler.is_compiling():
            routing.cache[key] = padding
        return padding


def _recomputes_routed(module: nn.Module) -> bool:
    return isinstance(module, ROUTABLE_HOLDERS)


def _broadcast(module: nn.Module, attribute: str, count: int) -> torch.Tensor | None:
    value = getattr(module, attribute, None)
    return None if value is None else value.unsqueeze(0).expand(count, *value.shape)


def parameter_holders(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """Every (module, attribute) that holds each parameter, by the parameter's id (tied ones have several)."""
    holders: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for attribute, param in module._parameters.items():
            if param is not None:
                holders.setdefault(id(param), []).append((module, attribute))
    return holders
