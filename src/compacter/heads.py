"""Task heads of their own size on one base: each task's label count, names and problem type.

A task copies the base's head (BERT's ``classifier``) as it copies any base parameter it trains
(base_copies.py). A task saved with another label count (5 labels; 1 for a regression) gets copies of
its saved shape (``fit_head_copies``), and ``compacter.apply(..., num_labels=)`` gives a new task a
new head of its own size (``new_head``): only the output features of a head's layers may differ
from the base's, its input is the base's hidden size. Alone, a task's head runs as the base's would: its
linear layer computes with the task's weight, whatever its shape. In a routed batch the head's
weights are padded to the routed tasks' largest head and each row's logits beyond its own task's
label count are -inf (base_copies.py), so that argmax and softmax per row are the task's own;
``compacter.split_logits`` gives each task's rows at its true size.

The model's ``config.id2label`` / ``label2id`` / ``problem_type`` and ``num_labels`` are the active
task's: each task keeps its own (saved with it, restored when it is loaded or made active, edits made
while it is active stay its own), and the base's show with no task active or inside
``compacter.disabled``.

This module imports nothing else of compacter but model_anatomy.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .model_anatomy import head_parameter_names

if TYPE_CHECKING:
    from .container import CompacterModules
    from .methods.base import MethodConfig, TaskModules

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


def is_classifier(model: nn.Module) -> bool:
    """A model whose head answers one of ``config.num_labels`` classes (or a score): a sequence classifier."""
    config = getattr(model, "config", None)
    architectures = getattr(config, "architectures", None) or []
    return any(str(a).endswith("ForSequenceClassification") for a in architectures) or type(
        model).__name__.endswith("ForSequenceClassification")


def current_labels(model: nn.Module) -> dict[str, Any]:
    """The labels ``model.config`` shows now."""
    config = model.config
    id2label = {int(i): str(label) for i, label in sorted(config.id2label.items(), key=lambda item: int(item[0]))}
    return {"id2label": id2label, "label2id": {str(k): int(v) for k, v in config.label2id.items()},
            "problem_type": config.problem_type}


def show_labels(model: nn.Module, labels: dict[str, Any]) -> None:
    """Make ``model`` (its config, and the label count its loss reads) show ``labels``."""
    config = model.config
    config.id2label = dict(labels["id2label"])  # the label count follows (transformers derives it from id2label)
    config.label2id = dict(labels["label2id"])
    config.problem_type = labels["problem_type"]
    if isinstance(vars(model).get("num_labels"), int):  # BertForSequenceClassification & co. keep their own copy
        model.num_labels = len(labels["id2label"])


def switch_labels(container: CompacterModules, previous: str | None, name: str | None) -> None:
    """The active task changes from ``previous`` to ``name`` (None: the base model): the config shows its labels."""
    if container.base_labels is None:
        return
    model = container._model
    if previous is None:
        container.base_labels = current_labels(model)
    elif previous in container.tasks:
        container.tasks[previous].labels = current_labels(model)
    if name is not None and container.tasks[name].labels is None:  # a new task copies the base's head
        container.tasks[name].labels = container.base_labels
    show_labels(model, container.base_labels if name is None else container.tasks[name].labels)


@contextlib.contextmanager
def base_labels_shown(container: CompacterModules) -> Iterator[None]:
    """While the base model runs in place of the active task (``compacter.disabled``), the config shows its labels."""
    if container.base_labels is None or container.active is None:
        yield
        return
    task, model = container.tasks[container.active], container._model
    task.labels = current_labels(model)
    show_labels(model, container.base_labels)
    try:
        yield
    finally:
        show_labels(model, task.labels)


def task_labels(container: CompacterModules, task: TaskModules) -> dict[str, Any] | None:
    """Task ``task``'s labels now (the config's, when it is the active task); None: the model has no head."""
    if container.base_labels is None:
        return None
    return current_labels(container._model) if container.active == task.name else task.labels


def label_count(container: CompacterModules, name: str) -> int | None:
    labels = task_labels(container, container.tasks[name])
    return None if labels is None else len(labels["id2label"])


def labels_from(description: dict[str, Any], count: int) -> dict[str, Any]:
    """A saved task's labels: the names it was saved with, else its run's task's (``compacter train``), else
    transformers' defaults (``LABEL_0`` ...)."""
    names = description.get("id2label")
    if names is None:
        recorded = ((description.get("metadata") or {}).get("task") or {})
        recorded = recorded.get("labels") if isinstance(recorded, dict) else None
        names = recorded if isinstance(recorded, list) and len(recorded) == count and count > 1 else None
    names = [str(n) for n in names] if names is not None else [f"LABEL_{i}" for i in range(count)]
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)},
            "problem_type": description.get("problem_type")}


def described_labels(labels: dict[str, Any] | None) -> dict[str, Any]:
    """What a saved task's description records of its labels."""
    if labels is None:
        return {}
    return {"id2label": [labels["id2label"][i] for i in sorted(labels["id2label"])],
            "problem_type": labels["problem_type"]}


def saved_head_shapes(model: nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """The shapes a saved task's head copies have where they differ from this model's head in output features only
    (a task with another label count); any other difference is left for the base model's check to report."""
    named = dict(model.named_parameters())
    shapes = {}
    for key in head_parameter_names(model):
        saved = tensors.get(f"base.{key}")
        if saved is None or key not in named:
            continue
        own = tuple(named[key].shape)
        if tuple(saved.shape) != own and saved.dim() == len(own) and tuple(saved.shape[1:]) == own[1:]:
            shapes[key] = tuple(saved.shape)
    return shapes


def task_head_shapes(model: nn.Module, task: TaskModules) -> dict[str, tuple[int, ...]]:
    """Task ``task``'s head copies whose shapes are not the base head's (fingerprinted with those shapes)."""
    named = dict(model.named_parameters())
    return {key: tuple(copy.shape) for key, copy in task.base_copies.items()
            if key in named and tuple(copy.shape) != tuple(named[key].shape)}


def fit_head_copies(task: TaskModules, shapes: dict[str, tuple[int, ...]]) -> None:
    """Give ``task`` head copies of the saved ``shapes`` (their values are the saved ones, copied in next)."""
    for key, shape in shapes.items():
        copy = task.base_copy(key)
        if copy is None:
            raise ValueError(f"The saved task has a head parameter {key} of shape {shape} that its method does not "
                             "train on this model; the file was not written for this method configuration.")
        task.add_base_copy(key, torch.zeros(shape, dtype=copy.dtype, device=copy.device))


def check_new_head(model: nn.Module, num_labels: Any, config: MethodConfig) -> None:
    """``compacter.apply(..., num_labels=)`` asks for a head of its own size: a whole number ≥ 1, on a classifier,
    for a method that trains its own copy of the head."""
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
        raise ValueError(f"num_labels must be a whole number ≥ 1 (1: a regression), got {num_labels!r}.")
    if not is_classifier(model):
        raise ValueError(f"num_labels= gives a task a classification head of its own size, and this "
                         f"{type(model).__name__} has no such head. Load the base as a sequence classifier "
                         "(AutoModelForSequenceClassification).")
    if config.trains_base_in_place:
        raise ValueError(f"The method {config.name!r} trains the base model's own head in place, so its task cannot "
                         "have a head of another size; build the base with num_labels= instead.")
    if not config.train_head:
        raise ValueError(f"The method {config.name!r} is set not to train the task head (train_head=False), so the "
                         "task cannot have a head of its own size; leave num_labels out, or set train_head=True.")


def new_head(model: nn.Module, task: TaskModules, base_labels: dict[str, Any], num_labels: int) -> None:
    """Give ``task`` a new head of ``num_labels`` outputs, initialized as transformers initializes a new head (normal
    weights of the config's ``initializer_range``, zero biases), and transformers' default labels."""
    base_count = len(base_labels["id2label"])
    if num_labels == base_count:  # a copy of the base's head, as any new task has
        return
    heads = head_parameter_names(model)
    shapes = {key: (num_labels, *copy.shape[1:]) for key, copy in task.base_copies.items()
              if key in heads and copy.shape[0] == base_count}  # the outputs of the head's last layer
    fit_head_copies(task, shapes)
    std = getattr(model.config, "initializer_range", 0.02)
    with torch.no_grad():
        for key in shapes:
            copy = task.base_copy(key)
            copy.normal_(0.0, std) if copy.dim() > 1 else copy.zero_()
    names = [f"LABEL_{i}" for i in range(num_labels)]
    task.labels = {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)},
                   "problem_type": None}
    show_labels(model, task.labels)
