"""``model.compacter``: the tasks attached to one base model, which of them runs, and the call boundaries.

A *task* (:class:`~compacter.methods.base.TaskModules`) is one method's trained parameters. Many
tasks share one frozen base model. At any time one task is *active*, or none (the base model), or
each row of a batch names its own task (*routing*, routing.py). What runs a task inside the model
lives beside this registry: its adapters at their sites (sites.py) and its copies of base
parameters (base_copies.py).

Call boundaries are the model and the parts of it that ``generate`` (or a user) calls directly
(its encoder, decoder, base model). The outermost call refreshes the prepared tensors of the tasks
in use (cache.py decides what still holds), outside any block that gradient checkpointing would
recompute.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .base_copies import BaseCopies, Override
from .heads import current_labels, is_classifier, switch_labels
from .methods.base import TaskModules
from .routing import Routing
from .sites import SiteHooks


class CompacterModules(nn.Module):
    """Everything compacter added to a model: its tasks (``tasks``), which runs, and the hooks' state."""

    def __init__(self, model: nn.Module, fingerprint: dict[str, Any], base_parameter_count: int) -> None:
        super().__init__()
        self.tasks = nn.ModuleDict()
        self.fingerprint = fingerprint
        self.base_parameter_count = base_parameter_count
        self.base_requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
        self.active: str | None = None
        self.enabled = True
        self.routing: Routing | None = None
        # the task every row runs (None: the base model, or a routed batch), kept by _tell_tasks at every switch: the
        # hooks read it at every module call
        object.__setattr__(self, "running", None)  # not a submodule: a task is registered once, under tasks
        self.restore_point = None  # set for a task that trains the base in place (attach.RestorePoint)
        self.base_labels = current_labels(model) if is_classifier(model) else None  # a classifier's own (heads.py)
        object.__setattr__(self, "_model", model)  # not a submodule: the model holds us
        self._depth = 0
        self._boundary_handles: list = []
        self.sites = SiteHooks(self)
        self.base_copies = BaseCopies(self)

    def __getstate__(self) -> dict:
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        # copy.deepcopy(model) copies no call in progress
        running = state["_modules"]["tasks"][self.active] if self.active is not None and self.enabled else None
        return {**state, "_depth": 0, "routing": None, "running": running}

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
        self.base_copies.add(overrides)
        self.sites.add(self._model, task)

    def remove_task(self, name: str) -> None:
        self.tasks[name].remove_hooks()
        del self.tasks[name]
        self.sites.keep_only(list(self.tasks.values()))
        self.base_copies.keep_only({key for task in self.tasks.values() for key in task.base_copies})
        if self.active == name:
            self.set_active(next(reversed(self.tasks.keys()), None) if len(self.tasks) else None)

    def add_boundary(self, module: nn.Module) -> None:
        self._boundary_handles.append(module.register_forward_pre_hook(self._enter, with_kwargs=True))
        self._boundary_handles.append(module.register_forward_hook(self._exit, always_call=True))

    def remove_all_hooks(self) -> None:
        for task in self.tasks.values():
            task.remove_hooks()
        for handle in self._boundary_handles:
            handle.remove()
        self._boundary_handles = []
        self.sites.remove_all()
        self.base_copies.remove_all()

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
            self.begin_call()  # no depth count while tracing: each boundary's first use builds (CSE merges them)
            return
        if self._depth == 0 and self.routing is not None:
            self.routing.check_batch(args, kwargs)
        depth = self._depth + 1
        object.__setattr__(self, "_depth", depth)  # (not nn.Module's __setattr__, which searches its registries)
        if depth == 1:
            self.begin_call()
            self.base_copies.swap_in_all()

    def _exit(self, module: nn.Module, args: tuple, output: Any) -> None:
        if torch.compiler.is_compiling():
            self.begin_call()
        else:
            depth = max(0, self._depth - 1)
            object.__setattr__(self, "_depth", depth)
            if depth == 0:
                self.base_copies.swap_out_all()

    def begin_call(self) -> None:
        """A call into the model starts: the tasks in use check what they prepared (cache.py's rules)."""
        self.sites.new_call()
        for name in self.tasks_in_use():
            task = self.tasks[name]
            task.prepared.refresh()
            if torch.is_grad_enabled() and not torch.compiler.is_compiling():  # (compiled: built at first use)
                for kind in task.sites:
                    kind.build(task)

    def ensure_call(self) -> None:
        """A hooked module called on its own, outside any boundary: without gradients, check the prepared tensors
        for this call alone. With gradients it is most likely gradient checkpointing recomputing a block in the
        backward pass, which must see the very weights of its forward: those are kept."""
        if self._depth == 0 and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            self.begin_call()

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
        self._tell_tasks()
        try:
            yield
        finally:
            self.active, self.enabled, self.routing = previous
            self._tell_tasks()

    def set_active(self, name: str | None) -> None:
        if name is not None:
            self.task(name).prepared.invalidate()
        switch_labels(self, self.active, name)
        self.active = name
        self._tell_tasks()

    def _tell_tasks(self) -> None:
        """Each task learns whether it runs alone now (a prompt's hooks run only then)."""
        alone = self.tasks[self.active] if self.active is not None and self.routing is None and self.enabled else None
        object.__setattr__(self, "running", alone)
        for name, task in self.tasks.items():
            task.switched(self.enabled and self.routing is None and name == self.active)


def container_of(model: nn.Module) -> CompacterModules:
    modules = getattr(model, "compacter", None)
    if not isinstance(modules, CompacterModules):
        raise ValueError("This model has no compacter method attached; call compacter.apply(model, method) first.")
    return modules


def refuse_in_place(container: CompacterModules, action: str) -> None:
    for task in container.tasks.values():
        if task.config.trains_base_in_place:
            raise ValueError(f"Task {task.name!r} ({task.config.name}) trains the base model's own parameters in "
                             f"place, so it cannot {action}: reload the base model instead.")
