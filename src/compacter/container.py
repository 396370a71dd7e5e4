"""``model.compacter``: every task attached to one base model, and the hooks that run them.

A *task* (:class:`~compacter.methods.base.TaskModules`) is one method's trained parameters: its
adapters (or prompt ...) and its own copies of the base parameters it trains (layer norms, a task
head). Many tasks share one frozen base model. At any time one task is *active*, or none (the
base model), or each row of a batch names its own task (*routing*).

The base model is hooked in three ways, each hook installed once however many tasks use it:

* call boundaries (the model, its encoder and decoder, which ``generate`` calls directly): the
  outermost call refreshes the built adapter weights of the tasks in use (``cache.py`` decides
  whether they must be rebuilt), outside any block that gradient checkpointing would recompute;
* adapter sites (a sublayer's output projection): ``h + U(act(D(h)))`` with the task's weights;
* holders of base parameters that tasks train (a layer norm, a head's linear layers): for the
  duration of the module's forward, the base parameter is swapped for the active task's copy
  (cast to the base's dtype: the copies are fp32 master weights), and swapped back afterwards,
  so that outside a forward the base model is exactly as it was loaded.

Routing gives row ``i`` of a batch the task ``tasks[i]``. A batch that a model expands (beam search,
``num_return_sequences``: each row repeated k times, consecutively) or flattens (tokens as rows)
keeps each row's task: a leading size of k·B maps row j to task ``tasks[j // k]``. At an adapter
site the routed tasks' adapters are concatenated along the bottleneck: one down projection for all
of them, each row's activations masked to its own task's block, one up projection back. That is one
matmul per projection whatever the number of tasks, exact (the masked blocks contribute zeros),
and the gradient of each row reaches only its own task's parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .cache import DerivedTensors
from .devices import hook_around_forward
from .layers import ACTIVATIONS, bottleneck
from .methods.base import TaskModules, site_key
from .methods.prompt import Prompt

Prepared = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None, str]


@dataclass(frozen=True)
class Override:
    """A base parameter that tasks may replace with their own copy, and where the base model holds it."""

    key: str  # the parameter's name in the base model (the first, when tied)
    group: str  # "layer_norms", "head" or "output_layer"
    holders: tuple[tuple[nn.Module, str], ...]  # (module, attribute) pairs that hold it


@dataclass
class Routing:
    tasks: tuple[str, ...]  # the distinct routed tasks, in first-seen order
    rows: torch.Tensor  # row → index into ``tasks``
    generating: bool = False  # inside generate(), whose beams / returned sequences repeat each row
    cache: dict = field(default_factory=dict)  # per-row gathers, kept while this routing lasts (decoding steps)

    def check_batch(self, args: tuple, kwargs: dict) -> None:
        """A call from outside must bring exactly one row per routed task name (generate() expands them itself)."""
        if self.generating:
            return
        size = batch_size(args, kwargs)
        if size is not None and size != self.rows.shape[0]:
            raise ValueError(f"compacter.route() names the tasks of {self.rows.shape[0]} rows, but the model was called "
                             f"with {size} rows. Give one task per row of the batch.")

    def row_index(self, hidden: torch.Tensor) -> torch.Tensor:
        """Each leading row of ``hidden``'s task index (rows repeated or flattened by the model included)."""
        batch, leading = self.rows.shape[0], hidden.shape[0]
        key = ("rows", leading, hidden.device)
        if key not in self.cache:
            if leading % batch:
                raise ValueError(f"compacter.route() names the tasks of {batch} rows, but the model was called with "
                                 f"{leading} rows. Give one task per row of the batch.")
            self.cache[key] = self.rows.repeat_interleave(leading // batch).to(hidden.device)
        return self.cache[key]


def batch_size(args: tuple, kwargs: dict) -> int | None:
    """The leading size of a call's first tensor input (input_ids, inputs_embeds, ...), if it has one."""
    for value in (*args, *(kwargs.get(k) for k in ("input_ids", "inputs_embeds", "decoder_input_ids"))):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    return None


def per_row(values: torch.Tensor, rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values[rows]`` shaped to broadcast over ``like``'s middle dimensions: (rows, 1, ..., 1, width)."""
    picked = values.index_select(0, rows)
    return picked.view(picked.shape[0], *([1] * (like.dim() - 2)), picked.shape[-1])


class CompacterModules(nn.Module):
    """Everything compacter added to a model: its tasks (``tasks``) and the state of the hooks."""

    def __init__(self, model: nn.Module, fingerprint: dict[str, Any], base_parameter_count: int) -> None:
        super().__init__()
        self.tasks = nn.ModuleDict()
        self.fingerprint = fingerprint
        self.base_parameter_count = base_parameter_count
        self.base_requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
        self.active: str | None = None
        self.enabled = True
        self.routing: Routing | None = None
        self.restore_point = None  # set for a task that trains the base in place (attach.RestorePoint)
        object.__setattr__(self, "_model", model)  # not a submodule: the model holds us
        self._depth = 0
        self._handles: list = []
        self._sites: dict[nn.Module, tuple[str, int]] = {}  # site module → (its name, calls per forward)
        self._calls: dict[nn.Module, int] = {}  # calls so far in this forward, of modules that run several times
        self._site_handles: dict[nn.Module, Any] = {}
        self._overrides: dict[str, Override] = {}  # by key: the base parameter's name
        self._held: dict[nn.Module, list[tuple[str, Override]]] = {}  # holder module → (attribute, override)
        self._override_handles: dict[nn.Module, list] = {}
        self._weights: dict[str, DerivedTensors] = {}  # per task: its banks' built weights
        self._derived: dict[str, list[DerivedTensors]] = {}  # per task: its modules' own (Intrinsic-SAID's)
        self._prepared: dict[str, tuple[int, dict[str, Prepared]]] = {}
        self._cast: dict[tuple[str, torch.dtype], tuple[int, dict[str, Prepared]]] = {}
        self._on_devices: dict[tuple, tuple[int, Prepared]] = {}  # a site's weights moved to its device (_moved)

    def __getstate__(self) -> dict:
        # copy.deepcopy(model): what was built from the weights is built again by the copy (a graph cannot be copied)
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        return {**state, "_prepared": {}, "_cast": {}, "_on_devices": {}, "_calls": {}, "_depth": 0, "routing": None}

    # ------------------------------------------------------------------ tasks
    @property
    def config(self):
        """The active task's method config."""
        return self.task().config

    def task(self, name: str | None = None) -> TaskModules:
        name = name or self.active
        if name is None:
            raise ValueError("No task is active on this model: name one, or compacter.set_active(model, name).")
        if name not in self.tasks:
            known = ", ".join(repr(t) for t in self.tasks) or "none"
            raise ValueError(f"No task named {name!r} is attached to this model (attached: {known}).")
        return self.tasks[name]

    def add_task(self, task: TaskModules, overrides: list[Override]) -> None:
        self.tasks[task.name] = task
        for override in overrides:
            if override.key in self._overrides:
                continue
            self._overrides[override.key] = override
            for module, attribute in override.holders:
                self._held.setdefault(module, []).append((attribute, override))
                if module not in self._override_handles:  # inside accelerate's hook, if it loads the module's own
                    self._override_handles[module] = hook_around_forward(module, self._swap_in, self._swap_out)
        for slot in task.adapters.values():
            module = self._model.get_submodule(slot.module)
            if module not in self._site_handles:
                self._sites[module] = (slot.module, slot.calls)
                self._site_handles[module] = module.register_forward_hook(self._adapt)
        # bound methods, not closures: a deep copy of the model then builds from its own banks
        self._weights[task.name] = DerivedTensors(task.bank_inputs, task.build_banks)
        self._derived[task.name] = [m.derived for m in task.modules()
                                    if isinstance(getattr(m, "derived", None), DerivedTensors)]

    def remove_task(self, name: str) -> None:
        task = self.tasks[name]
        task.remove_hooks()
        del self.tasks[name]
        self._weights.pop(name, None)
        self._derived.pop(name, None)
        self._prepared.pop(name, None)
        self._cast = {key: value for key, value in self._cast.items() if key[0] != name}
        self._on_devices = {key: value for key, value in self._on_devices.items() if key[0] != name}
        in_use = {slot.module for other in self.tasks.values() for slot in other.adapters.values()}
        for module, (site, _) in list(self._sites.items()):
            if site not in in_use:
                self._site_handles.pop(module).remove()
                del self._sites[module]
        used = {key for other in self.tasks.values() for key in other.base_copies}
        for key in [key for key in self._overrides if key not in used]:
            for module, _ in self._overrides.pop(key).holders:
                self._held[module] = [(a, o) for a, o in self._held[module] if o.key != key]
                if not self._held[module]:
                    del self._held[module]
                    for handle in self._override_handles.pop(module):
                        handle.remove()
        if self.active == name:
            self.active = next(reversed(self.tasks.keys()), None) if len(self.tasks) else None

    def add_boundary(self, module: nn.Module) -> None:
        """Hook ``module`` as a call boundary (its outermost call refreshes the weights in use)."""
        self._handles.append(module.register_forward_pre_hook(self._enter, with_kwargs=True))
        self._handles.append(module.register_forward_hook(self._exit, always_call=True))

    def remove_all_hooks(self) -> None:
        for name in list(self.tasks):
            self.tasks[name].remove_hooks()
        for handle in [*self._handles, *self._site_handles.values()]:
            handle.remove()
        for handles in self._override_handles.values():
            for handle in handles:
                handle.remove()
        self._handles, self._site_handles, self._override_handles = [], {}, {}

    def tasks_in_use(self) -> list[str]:
        if not self.enabled:
            return []
        if self.routing is not None:
            return list(self.routing.tasks)
        return [self.active] if self.active is not None else []

    # ------------------------------------------------------------------ call boundaries
    def _enter(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if "adapter_names" in kwargs:
            raise ValueError("compacter does not read adapter_names= (PEFT's argument): route the rows of a batch "
                             "to their tasks with `with compacter.route(model, tasks): ...`.")
        if torch.compiler.is_compiling():
            self._end_trace()  # no depth count while tracing: each boundary's first use builds (CSE merges them)
            return
        if self._depth == 0 and self.routing is not None:
            self.routing.check_batch(args, kwargs)
        self._depth += 1
        if self._depth == 1:
            self._calls.clear()
            self.begin_call()

    def _exit(self, module: nn.Module, args: tuple, output: Any) -> None:
        if not torch.compiler.is_compiling():
            self._depth = max(0, self._depth - 1)
        else:
            self._end_trace()

    def _end_trace(self) -> None:
        for name in self.tasks_in_use():
            for derived in (self._weights[name], *self._derived[name]):
                derived.end_trace()

    def begin_call(self) -> None:
        """Refresh the built weights of the tasks in use (rebuilt only where cache.py's rules say so)."""
        for name in self.tasks_in_use():
            for derived in (self._weights[name], *self._derived[name]):
                derived.refresh()

    def _ensure_call(self) -> None:
        """A hooked module called on its own, outside any boundary: without gradients, check the weights for this
        call alone. With gradients it is most likely gradient checkpointing recomputing a block in the backward
        pass, which must see the very weights of its forward: those are kept (or built if there are none)."""
        if self._depth == 0 and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            self.begin_call()

    # ------------------------------------------------------------------ adapter sites
    def prepared(self, name: str, dtype: torch.dtype | None = None) -> dict[str, Prepared]:
        """Site → (down weight, down bias, up weight, up bias, activation) of task ``name``'s adapters."""
        weights = self._weights[name]
        built = weights.value
        if torch.compiler.is_compiling():
            return _prepare(self.tasks[name], built)
        cached = self._prepared.get(name)
        if cached is None or cached[0] != weights.generation:
            cached = (weights.generation, _prepare(self.tasks[name], built))
            self._prepared[name] = cached
        if dtype is None or dtype == torch.float32:
            return cached[1]
        cast = self._cast.get((name, dtype))
        if cast is None or cast[0] != weights.generation:
            cast = (weights.generation, {site: _cast_prepared(p, dtype) for site, p in cached[1].items()})
            self._cast[(name, dtype)] = cast
        return cast[1]

    def _moved(self, name: str, dtype: torch.dtype | None, site: str, device: torch.device) -> Prepared:
        """Task ``name``'s weights at ``site`` on ``device``: moved once per build of the weights (in the graph)."""
        weights = self._weights[name]
        prepared = self.prepared(name, dtype)[site]
        if torch.compiler.is_compiling():
            return _moved_prepared(prepared, device)
        key = (name, dtype, site, device)
        cached = self._on_devices.get(key)
        if cached is None or cached[0] != weights.generation:
            cached = (weights.generation, _moved_prepared(prepared, device))
            self._on_devices[key] = cached
        return cached[1]

    def _adapt(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if not self.enabled:
            return output
        hidden = output[0] if isinstance(output, tuple) else output
        site = self._site_key(module)
        self._ensure_call()
        if self.routing is not None:
            adapted = self._routed_adapters(site, hidden)
        else:
            if self.active is None or site not in self.tasks[self.active].adapters:
                return output
            dtype = None if torch.is_autocast_enabled(hidden.device.type) else hidden.dtype
            weights = self.prepared(self.active, dtype)[site]
            if weights[0].device != hidden.device:  # a model spread over devices: the bank is on another one
                weights = self._moved(self.active, dtype, site, hidden.device)
            adapted = bottleneck(hidden, *weights)
        return (adapted, *output[1:]) if isinstance(output, tuple) else adapted

    def _site_key(self, module: nn.Module) -> str:
        name, calls = self._sites[module]
        if calls == 1:
            return name
        position = self._calls.get(module, 0)
        if position >= calls:
            raise RuntimeError(
                f"{name} is shared by {calls} layer positions but ran a {position + 1}th time in one forward pass. Its "
                "adapters count its calls from the start of each call of the model (or its encoder / decoder): call "
                "the model rather than a part of it, and do not recompute its layers with activation checkpointing.")
        self._calls[module] = position + 1
        return site_key(name, position, calls)

    def _routed_adapters(self, site: str, hidden: torch.Tensor) -> torch.Tensor:
        routing = self.routing
        stacked = self._stacked(site, routing.tasks)
        if stacked is None:
            return hidden
        down_weight, down_bias, up_weight, up_bias, masks = stacked
        if down_weight.device != hidden.device:  # a model spread over devices: this site's weights are elsewhere
            down_weight, down_bias, up_weight, up_bias = (t.to(hidden.device) for t in stacked[:4])
            masks = tuple((activation, mask.to(hidden.device)) for activation, mask in masks)
        if not torch.is_autocast_enabled(hidden.device.type) and down_weight.dtype != hidden.dtype:
            down_weight, up_weight = down_weight.to(hidden.dtype), up_weight.to(hidden.dtype)
            down_bias, up_bias = down_bias.to(hidden.dtype), up_bias.to(hidden.dtype)
        key = ("adapter", site, id(stacked), hidden.shape[0], hidden.dim(), hidden.dtype)
        if key not in routing.cache or torch.is_grad_enabled():  # (with gradients: part of this call's graph)
            rows = routing.row_index(hidden)
            routing.cache[key] = ([(activation, per_row(mask, rows, hidden).to(hidden.dtype)) for activation, mask in masks],
                                  per_row(up_bias, rows, hidden))
        row_masks, row_bias = routing.cache[key]
        before = F.linear(hidden, down_weight, down_bias)
        after = sum(ACTIVATIONS[activation](before) * mask for activation, mask in row_masks)
        return F.linear(after, up_weight).add_(hidden).add_(row_bias)

    def _stacked(self, site: str, names: tuple[str, ...]):
        """The routed tasks' adapters at ``site`` as one concatenated bottleneck (None if none has one).

        Kept while the routing lasts (every decoding step of a generate), and rebuilt if a task's weights were."""
        generations = tuple(self._weights[name].generation for name in names)
        key = ("stack", site)
        cached = self.routing.cache.get(key)
        if cached is not None and cached[0] == generations and not torch.compiler.is_compiling():
            return cached[1]
        parts = [(position, self.prepared(name)[site]) for position, name in enumerate(names)
                 if site in self.tasks[name].adapters]
        if not parts:
            stacked = None
        else:
            reference = parts[0][1][0]
            sizes = [p[0].shape[0] for _, p in parts]
            down_weight = torch.cat([p[0] for _, p in parts])
            down_bias = torch.cat([p[1] if p[1] is not None else p[0].new_zeros(p[0].shape[0]) for _, p in parts])
            up_weight = torch.cat([p[2] for _, p in parts], dim=1)
            zero = reference.new_zeros(reference.shape[1])
            # a task with no adapter here adds nothing: its row of biases is zero and its rows of the masks too
            up_bias = torch.stack([next((p[3] for pos, p in parts if pos == position and p[3] is not None), zero)
                                   for position in range(len(names))])
            by_activation: dict[str, torch.Tensor] = {}
            start = 0
            for (position, p), size in zip(parts, sizes):
                mask = by_activation.setdefault(p[4], reference.new_zeros(len(names), sum(sizes)))
                mask[position, start: start + size] = 1
                start += size
            stacked = (down_weight, down_bias, up_weight, up_bias, tuple(by_activation.items()))
        if not torch.compiler.is_compiling():
            self.routing.cache[key] = (generations, stacked)
        return stacked

    # ------------------------------------------------------------------ base parameters that tasks train
    def _copy(self, override: Override, name: str) -> torch.Tensor | None:
        """Task ``name``'s own copy of an overridden base parameter (None: it uses the base's)."""
        return self.tasks[name].base_copy(override.key)

    def _swap_in(self, module: nn.Module, args: tuple) -> None:
        swaps = {}
        if self.enabled and self.tasks_in_use():
            self._ensure_call()
            for attribute, override in self._held[module]:
                base = module._parameters[attribute]
                if self.routing is None:
                    value = self._copy(override, self.active)
                    if value is not None:
                        same = value.dtype == base.dtype and value.device == base.device
                        swaps[attribute] = value if same else value.to(base.device, base.dtype)
                elif not _recomputes_routed(module):  # a norm of the model's own: it broadcasts its weight
                    values = self._routed_values(override, base)
                    if values is not None:
                        swaps[attribute] = per_row(values, self.routing.row_index(args[0]), args[0])
        # all computed first: a failure above leaves the module untouched
        module.__dict__.setdefault("_compacter_saved", []).append({a: module._parameters[a] for a in swaps})
        module._parameters.update(swaps)

    def _swap_out(self, module: nn.Module, args: tuple, output: Any) -> Any:
        stack = module.__dict__.get("_compacter_saved")
        if stack:
            module._parameters.update(stack.pop())
        if self.routing is not None and self.enabled and _recomputes_routed(module):
            return self._recompute_routed(module, args[0], output)
        return output

    def _routed_values(self, override: Override, base: torch.Tensor) -> torch.Tensor | None:
        """(routed tasks, *shape): each routed task's copy of the parameter, or the base's own value."""
        values = [self._copy(override, name) for name in self.routing.tasks]
        if all(v is None for v in values):
            return None
        return torch.stack([base if v is None else v.to(base.device, base.dtype) for v in values])

    def _recompute_routed(self, module: nn.Module, hidden: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """A linear layer or torch norm whose parameters differ per row: its output computed row by row."""
        values = {}
        for attribute, override in self._held[module]:
            stacked = self._routed_values(override, module._parameters[attribute])
            if stacked is not None:
                values[attribute] = stacked
        if not values:
            return output
        rows = self.routing.row_index(hidden)
        weight = values.get("weight", _broadcast(module, "weight", len(self.routing.tasks)))
        bias = values.get("bias", _broadcast(module, "bias", len(self.routing.tasks)))
        if isinstance(module, nn.Linear):
            result = torch.einsum("b...i,boi->b...o", hidden, weight.index_select(0, rows).to(hidden.dtype))
            return result if bias is None else result + per_row(bias, rows, result).to(result.dtype)
        if isinstance(module, nn.LayerNorm):
            normed = F.layer_norm(hidden, module.normalized_shape, None, None, module.eps)
        else:
            normed = F.rms_norm(hidden, module.normalized_shape, None, module.eps)
        result = normed * per_row(weight.flatten(1), rows, normed).to(normed.dtype) if weight is not None else normed
        return result if bias is None else result + per_row(bias.flatten(1), rows, result).to(result.dtype)

    # ------------------------------------------------------------------ switching
    @contextlib.contextmanager
    def switched(self, *, active: str | None = ..., enabled: bool | None = None,
                 routing: Routing | None = ...) -> Iterator[None]:
        previous = (self.active, self.enabled, self.routing)
        if active is not ...:
            self.active = active
        if enabled is not None:
            self.enabled = enabled
        if routing is not ...:
            self.routing = routing
        self._update_prompts()
        try:
            yield
        finally:
            self.active, self.enabled, self.routing = previous
            self._update_prompts()

    def _update_prompts(self) -> None:
        """A prompt's hooks run only while its task is the active one."""
        for name, task in self.tasks.items():
            for module in task.modules():
                if isinstance(module, Prompt):
                    module.enabled = self.enabled and self.routing is None and name == self.active

    def set_active(self, name: str | None) -> None:
        if name is not None:
            self.task(name)
        self.active = name
        self._update_prompts()

    def weight_builds(self, name: str | None = None) -> int:
        """How many times task ``name``'s adapter weights were built (for tests and benchmarks)."""
        return self._weights[name or self.active].generation


def _prepare(task: TaskModules, built: dict) -> dict[str, Prepared]:
    prepared = {}
    for site, slot in task.adapters.items():
        down_weights, down_biases = built[slot.down]
        up_weights, up_biases = built[slot.up]
        prepared[site] = (down_weights[slot.index], down_biases[slot.index], up_weights[slot.index],
                          up_biases[slot.index], slot.activation)
    return prepared


def _moved_prepared(prepared: Prepared, device: torch.device) -> Prepared:
    *tensors, activation = prepared
    return (*(None if t is None else t.to(device) for t in tensors), activation)


def _cast_prepared(prepared: Prepared, dtype: torch.dtype) -> Prepared:
    *tensors, activation = prepared
    return (*(None if t is None else t.to(dtype) for t in tensors), activation)


def _recomputes_routed(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.LayerNorm, nn.RMSNorm))


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

