"""The hooks that run tasks' adapters at modules of the base model: each module hooked once per site kind.

A hook takes the module's ``forward``'s place (devices.ForwardWrapper), not a torch hook: a module with
torch hooks takes torch's slow call path at every call.

A hook finds the task that runs (the active one, or each row's under ``compacter.route``), asks it for
its weights at this site (prepared for the whole task at once, cached per call: ``TaskModules.
site_weights``) and hands them to the kind's ``forward``. For a routed batch the routed tasks' weights
at the site are stacked once (kept while the routing and their weights last: every decoding step of a
``generate``) and each row gets its own task's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .devices import ForwardWrapper
from .methods.base import SiteKind, TaskModules, site_key

if TYPE_CHECKING:
    from .container import CompacterModules


class SiteHook(ForwardWrapper):
    """The hook of one (module, site kind): what every task of that kind does at that module."""

    def __init__(self, container: CompacterModules, kind: SiteKind, module: nn.Module, name: str, calls: int) -> None:
        super().__init__(module)
        self.container, self.kind, self.name, self.calls = container, kind, name, calls
        self.position = 0  # calls so far in this forward, for a module that runs at several layer positions
        self.on_input = kind.where == "input"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.on_input:
            args = self.before(self.module, args) or args
            return self.inner(*args, **kwargs)
        return self.after(self.module, args, self.inner(*args, **kwargs))

    def after(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if not self.container.enabled:
            return output
        hidden = output[0] if isinstance(output, tuple) else output
        adapted = self.run(hidden, args)
        if adapted is None:
            return output
        return (adapted, *output[1:]) if isinstance(output, tuple) else adapted

    def before(self, module: nn.Module, args: tuple) -> tuple | None:
        if not self.container.enabled or not args:
            return None
        adapted = self.run(args[0], args)
        return None if adapted is None else (adapted, *args[1:])

    def run(self, value: torch.Tensor, args: tuple) -> torch.Tensor | None:
        container = self.container
        key = self.site_key()
        container.ensure_call()
        routing = container.routing
        if routing is None:
            task = container.running
            weights = None if task is None else task.site_weights(self.kind, key, value)
            return None if weights is None else self.kind.forward(value, args, weights)
        parts = [container.tasks[name].site_weights(self.kind, key, value) for name in routing.tasks]
        cached = routing.cache.get((self, key))
        if cached is not None and all(a is b for a, b in zip(cached[0], parts)):
            stacked = cached[1]
        else:
            stacked = self.kind.stack(parts)
            if not torch.compiler.is_compiling():
                routing.cache[(self, key)] = (parts, stacked)
        return None if stacked is None else self.kind.forward(value, args, stacked, routing.row_index(value))

    def site_key(self) -> str:
        if self.calls == 1:
            return self.name
        position = self.position
        if position >= self.calls:
            raise RuntimeError(
                f"{self.name} is shared by {self.calls} layer positions but ran a {position + 1}th time in one forward "
                "pass. Its adapters count its calls from the start of each call of the model (or its encoder / "
                "decoder): call the model rather than a part of it, and do not recompute its layers with activation "
                "checkpointing.")
        self.position = position + 1
        return site_key(self.name, position, self.calls)


class SiteHooks:
    """Every module that some task's adapters run at, hooked once per site kind."""

    def __init__(self, container: CompacterModules) -> None:
        self.container = container
        self.hooks: dict[tuple[nn.Module, SiteKind], SiteHook] = {}
        self.counted: list[SiteHook] = []  # the hooks of modules that run several times per forward

    def add(self, model: nn.Module, task: TaskModules) -> None:
        for kind, slots in task.sites.items():
            for key in slots:
                name, calls = task.site_modules[key]
                module = model.get_submodule(name)
                if (module, kind) not in self.hooks:
                    hook = self.hooks[(module, kind)] = SiteHook(self.container, kind, module, name, calls)
                    if calls > 1:
                        self.counted.append(hook)

    def keep_only(self, tasks: list[TaskModules]) -> None:
        """Unhook what no task of ``tasks`` uses any more."""
        used = {(task.site_modules[key][0], kind) for task in tasks for kind, slots in task.sites.items() for key in slots}
        for (module, kind), hook in list(self.hooks.items()):
            if (hook.name, kind) not in used:
                hook.remove()
                del self.hooks[(module, kind)]
        self.counted = [hook for hook in self.counted if hook in self.hooks.values()]

    def new_call(self) -> None:
        for hook in self.counted:
            hook.position = 0

    def remove_all(self) -> None:
        for hook in self.hooks.values():
            hook.remove()
        self.hooks, self.counted = {}, []
