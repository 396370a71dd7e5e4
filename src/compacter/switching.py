"""Which task a model runs: the active one, none (``disabled``), or one per row of a batch (``route``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from .container import CompacterModules, container_of, refuse_in_place
from .heads import base_labels_shown, label_count, task_labels
from .methods import MethodConfig
from .names import check_task_name
from .routing import Routing


def attached_config(model: nn.Module, name: str | None = None) -> MethodConfig:
    """The method config of task ``name`` (default: the active task)."""
    return container_of(model).task(name).config


def tasks(model: nn.Module) -> list[str]:
    """The names of the tasks attached to ``model``, in the order they were attached."""
    modules = getattr(model, "compacter", None)
    return list(modules.tasks) if isinstance(modules, CompacterModules) else []


def active_task(model: nn.Module) -> str | None:
    return container_of(model).active


def set_active(model: nn.Module, name: str | None) -> None:
    """Make task ``name`` the one the model runs (None: none, the base model)."""
    container = container_of(model)
    if name is not None:
        check_task_name(name, "set_active(): the task name")
    if container.routing is not None:
        raise ValueError("set_active() inside compacter.route(): the route says each row's task, and leaving it would "
                         "undo the change. Call set_active() after the `with compacter.route(...)` block.")
    container.set_active(name)


@contextlib.contextmanager
def disabled(model: nn.Module) -> Iterator[nn.Module]:
    """``with compacter.disabled(model):`` the base model's own outputs, no task applied."""
    container = container_of(model)
    refuse_in_place(container, "be disabled")
    with container.switched(enabled=False), base_labels_shown(container):
        yield model


@contextlib.contextmanager
def route(model: nn.Module, row_tasks: Sequence[str]) -> Iterator[nn.Module]:
    """``with compacter.route(model, ["rte", "mrpc", ...]):`` row i of every batch runs task ``row_tasks[i]``.

    Forward passes, losses and their gradients (each row's reaches only its own task's parameters)
    and ``generate`` (beam search and ``num_return_sequences`` included) all follow the routing.
    """
    container = container_of(model)
    refuse_in_place(container, "be routed per row")
    if isinstance(row_tasks, str) or not isinstance(row_tasks, Sequence) or not row_tasks:
        raise ValueError("route() takes one task name per row of the batch, e.g. ['rte', 'mrpc', 'rte'].")
    for name in row_tasks:
        container.task(check_task_name(name, "route(): each row's task name"))
    distinct = tuple(dict.fromkeys(row_tasks))
    for name in distinct:
        reason = unroutable_reason(model, name)
        if reason:
            raise ValueError(f"{reason} Run its rows in a batch of their own.")
    index = {name: i for i, name in enumerate(distinct)}
    device = next(container.parameters(), torch.empty(0)).device
    counts = tuple(label_count(container, name) for name in distinct)
    routing = Routing(distinct, torch.tensor([index[name] for name in row_tasks], device=device), names=tuple(row_tasks),
                      label_counts=counts if len(set(counts)) > 1 else ())
    generate = model.__dict__.get("generate")
    if hasattr(model, "generate"):
        model.generate = _routed_generate(model, routing)
    try:
        with container.switched(routing=routing):
            yield model
    finally:
        if generate is None:
            model.__dict__.pop("generate", None)
        else:
            model.generate = generate


def unroutable_reason(model: nn.Module, name: str) -> str | None:
    """Why task ``name`` cannot share a batch with other tasks (None: it can)."""
    container = container_of(model)
    task = container.task(name)
    if task.config.trains_base_in_place:
        return f"Task {name!r} ({task.config.name}) trains the base model's own parameters in place."
    if not task.config.routable:
        return f"Task {name!r} ({task.config.name}): {task.config.unroutable_reason}."
    for key in task.base_copies:
        holder = container.base_copies.unroutable_holder(key)
        if holder is not None:
            return f"Task {name!r} trains {key} (held by a {holder}), which cannot differ from row to row."
    return None


def _routed_generate(model: nn.Module, routing: Routing):
    """generate() repeats each routed row for its beams and returned sequences: allowed only inside it."""
    generate = model.generate

    def routed(*args, **kwargs):
        routing.check_batch(args, {**kwargs, "input_ids": kwargs.get("input_ids", kwargs.get("inputs"))})
        routing.generating = True
        try:
            return generate(*args, **kwargs)
        finally:
            routing.generating = False
    return routed


def split_logits(model: nn.Module, logits: torch.Tensor, row_tasks: Sequence[str]) -> dict[str, torch.Tensor]:
    """A routed batch's logits by task: ``{task: its rows' logits, in batch order, at its own label count}``.

    A routed batch of classifiers whose heads have other label counts gives logits of the largest
    count, each row's beyond its own task's count -inf (so argmax and softmax per row are right as
    they are); this drops that padding.
    """
    container = container_of(model)
    if isinstance(row_tasks, str) or len(row_tasks) != logits.shape[0]:
        raise ValueError(f"split_logits() takes the routed tasks of the {logits.shape[0]} rows of the logits, one name "
                         f"per row (as given to compacter.route), got {row_tasks!r}.")
    split = {}
    for name in dict.fromkeys(row_tasks):
        count = label_count(container, container.task(name).name)
        if count is None:
            raise ValueError(f"split_logits() splits a classifier's logits; this {type(model).__name__} has no "
                             "classification head.")
        rows = torch.tensor([i for i, row in enumerate(row_tasks) if row == name], device=logits.device)
        split[name] = logits.index_select(0, rows)[..., :count]
    return split


def row_label_counts(model: nn.Module, rows: int) -> list[int] | None:
    """The label count of each of ``rows`` rows' task in the call now (routed or not); None: no classifier."""
    container = getattr(model, "compacter", None)
    if not isinstance(container, CompacterModules) or container.base_labels is None:
        return None
    routing = container.routing
    if routing is not None and routing.names:
        counts = {name: label_count(container, name) for name in routing.tasks}
        return [counts[name] for name in routing.names]
    running = container.running
    labels = container.base_labels if running is None else task_labels(container, running)
    return [len(labels["id2label"])] * rows


def refresh(model: nn.Module) -> None:
    """Make every task recompute what it derives from its parameters at the next call.

    Needed only after editing trained parameters through ``p.data`` (``p.data.copy_(...)``, an EMA written
    to ``.data``): such edits bypass the version counters by which compacter sees changes (cache.py). Optimizer
    steps, ``p.copy_`` under ``torch.no_grad()``, ``compacter.load``, ``set_active`` and ``model.to(...)`` need
    nothing.
    """
    for task in container_of(model).tasks.values():
        task.prepared.invalidate()
