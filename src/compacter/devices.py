"""Where each part of a base model computes, for a model that accelerate spreads over devices or offloads.

``from_pretrained(..., device_map="auto")`` (accelerate's ``dispatch_model``), ``cpu_offload`` and
``disk_offload`` leave each module's parameters either on the device it computes on, or, when
they are offloaded, on the meta device: an accelerate hook (``AlignDevicesHook``) then loads them
onto the module's *execution device* from its weights map for the duration of each call, and puts
them back on the meta device afterwards. For such a model compacter

* creates each adapter's parameters on its site's execution device, and each task's copy of a
  base parameter (a layer norm, a head) on its holder's, from the values in the weights map;
* runs its own code for a module that an accelerate hook loads *inside* that hook (after the
  parameters are loaded, before they are offloaded again): a task's copy swapped in before the
  hook loads the module's parameters would be overwritten by them.

This module imports nothing else of compacter.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator
from typing import Any

import torch
from torch import nn


def _align_hooks(module: nn.Module) -> list[Any]:
    """accelerate's AlignDevicesHooks on ``module`` (one, or several chained in a SequentialHook)."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    hooks = getattr(hook, "hooks", (hook,))
    return [h for h in hooks if hasattr(h, "execution_device") and hasattr(h, "weights_map")]


def _ancestors(model: nn.Module, name: str) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of ``name`` and every module above it, nearest first, the model last."""
    parts = name.split(".") if name else []
    for end in range(len(parts), -1, -1):
        prefix = ".".join(parts[:end])
        yield prefix, model.get_submodule(prefix)


def execution_device(model: nn.Module, name: str) -> torch.device:
    """The device module ``name`` computes on: its parameters' or, for an offloaded one, its hook's execution device."""
    module = model.get_submodule(name)
    first = next(module.parameters(), None)
    if first is not None and first.device.type != "meta":
        return first.device
    for _, ancestor in _ancestors(model, name):
        for hook in _align_hooks(ancestor):
            if hook.execution_device is not None:
                return torch.device(hook.execution_device)
    return first.device if first is not None else torch.device("cpu")  # a model built on the meta device: meta


def stored_value(model: nn.Module, name: str) -> torch.Tensor:
    """The value of parameter ``name``: the parameter itself, or, when accelerate offloaded it, its weights map's."""
    module_name, _, attribute = name.rpartition(".")
    param = model.get_submodule(module_name)._parameters[attribute]
    if param.device.type != "meta":
        return param
    for prefix, ancestor in _ancestors(model, module_name):
        relative = name[len(prefix) + 1:] if prefix else name
        for hook in _align_hooks(ancestor):
            if not hook.offload or hook.weights_map is None or ("." in relative and not hook.place_submodules):
                continue
            try:
                return hook.weights_map[relative]
            except KeyError:
                continue
    return param  # a model built on the meta device (shapes only, e.g. to count parameters)


def is_offloaded(model: nn.Module) -> bool:
    """Whether any of the model's parameters lives in an accelerate weights map (CPU or disk offload) between calls."""
    return any(param.device.type == "meta" for param in model.parameters()) and any(
        hook.offload for module in model.modules() for hook in _align_hooks(module))


class ForwardWrapper:
    """A callable in place of a module's ``forward`` (or ``_old_forward``, inside the accelerate hook that wraps it)
    that calls ``inner``, the forward it replaced. Not torch hooks: a module with hooks takes torch's slow call path
    at every call, which for the dozens of norms and adapter sites of a model was most of a decoding step's overhead.
    Wrappers may stack; :meth:`remove` takes one out of anywhere in the stack."""

    def __init__(self, module: nn.Module, attribute: str = "forward") -> None:
        self.module, self.attribute = module, attribute
        self.own = module.__dict__.get(attribute)  # what the instance itself held there (another wrapper), if anything
        self.inner = getattr(module, attribute)
        object.__setattr__(module, attribute, self)

    def remove(self) -> None:
        outer = self.module.__dict__.get(self.attribute)
        if outer is self:
            if self.own is None:
                del self.module.__dict__[self.attribute]  # the class's forward again
            else:
                object.__setattr__(self.module, self.attribute, self.own)
            return
        while isinstance(outer, ForwardWrapper):
            if outer.inner is self:
                outer.inner, outer.own = self.inner, self.own
                return
            outer = outer.inner


class _AroundForward(ForwardWrapper):
    """``before(module, args)`` and ``after(module, args, output)`` around the module's forward, skipped while the
    module is in ``skip_while_in`` (a collection the caller keeps: one membership test instead of two calls)."""

    def __init__(self, module: nn.Module, before: Callable, after: Callable, attribute: str,
                 skip_while_in: Container[nn.Module]) -> None:
        super().__init__(module, attribute)
        self.before, self.after, self.skip_while_in = before, after, skip_while_in

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.module in self.skip_while_in:
            return self.inner(*args, **kwargs)
        self.before(self.module, args)
        try:
            output = self.inner(*args, **kwargs)
        except BaseException:
            self.after(self.module, args, None)
            raise
        return self.after(self.module, args, output)


def loads_own_parameters(module: nn.Module) -> bool:
    """Whether an accelerate hook wraps the module's forward (it may load the module's parameters only then)."""
    return bool(_align_hooks(module)) and "_old_forward" in module.__dict__


def hook_around_forward(module: nn.Module, before: Callable[[nn.Module, tuple], None],
                        after: Callable[[nn.Module, tuple, Any], Any],
                        skip_while_in: Container[nn.Module] = frozenset()) -> list[Any]:
    """Run ``before(module, args)`` and ``after(module, args, output)`` (which returns the output) around each call of
    ``module`` that finds it outside ``skip_while_in``: inside its accelerate hook when it has one, else around its
    forward. Returns handles with ``remove()``."""
    attribute = "_old_forward" if loads_own_parameters(module) else "forward"
    return [_AroundForward(module, before, after, attribute, skip_while_in)]
