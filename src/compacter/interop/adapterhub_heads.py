"""AdapterHub's classification heads as a transformers sequence classifier's: ``layers=1, use_pooler=True`` is
its ``classifier`` (over the base's pooler); the default ``layers=2, use_pooler=False`` (dense + tanh on the [CLS]
token, then the output layer) is the ``classifier`` over a pooler of the task's own (``train_pooler=True``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

HEAD_CONFIG_FILE = "head_config.json"


def head_layers(description: dict[str, Any] | None, directory: Path) -> int | None:
    """The layer count of the head that ``head_config.json`` describes (1: on the base's pooler; 2: on a pooler of
    the task's own; None: no head), or a ValueError naming the head option without a counterpart."""
    if description is None:
        return None
    head, where = description["config"], directory / HEAD_CONFIG_FILE
    shape = (head.get("layers"), bool(head.get("use_pooler")))
    problem = None
    if head.get("head_type") != "classification":
        problem = f"head_type={head.get('head_type')!r}"
    elif shape not in ((1, True), (2, False)):
        problem = f"layers={shape[0]}, use_pooler={shape[1]}"
    elif shape == (2, False) and head.get("activation_function") != "tanh":
        problem = f"activation_function={head.get('activation_function')!r}"
    elif head.get("bias", True) is not True:
        problem = f"bias={head.get('bias')!r}"
    if problem:
        raise ValueError(
            f"{where}: AdapterHub head option {problem} has no counterpart in a transformers sequence classifier, "
            "which is AdapterHub's classification head with layers=1, use_pooler=True, or (with a pooler of the "
            "task's own) layers=2, use_pooler=False, activation_function='tanh'. Load the adapter alone from a "
            f"folder without {HEAD_CONFIG_FILE}.")
    return shape[0]


def head_tensors(model: nn.Module, description: dict[str, Any] | None, tensors: dict[str, torch.Tensor],
                 directory: Path) -> dict[str, torch.Tensor]:
    """The head's tensors by the names of the model's parameters they replace (the task's copies of them)."""
    layers = head_layers(description, directory)
    if layers is None:
        return {}
    head, where = description["config"], directory / HEAD_CONFIG_FILE
    classifier = getattr(model, "classifier", None)
    labels = int(head["num_labels"])
    if not isinstance(classifier, nn.Linear) or classifier.out_features != labels:
        raise ValueError(f"{where}: the head classifies into {labels} labels; load it onto a sequence classification "
                         f"model with num_labels={labels} (compacter.from_pretrained(folder) builds one).")
    pooler = getattr(getattr(model, "base_model", model), "pooler", None)
    if layers == 2 and not (isinstance(getattr(pooler, "dense", None), nn.Linear)
                            and isinstance(getattr(pooler, "activation", None), nn.Tanh)):
        raise ValueError(f"{where}: the head (layers=2 on the [CLS] token) runs as a pooler (dense + tanh) of the "
                         f"task's own, and this {type(model).__name__} has no such pooler; load the adapter alone "
                         f"from a folder without {HEAD_CONFIG_FILE}.")
    # heads.<name>.<index>.weight; AdapterHub's Sequential: layers=1: dropout, linear; layers=2: dropout, linear,
    # activation, dropout, linear
    weights = {".".join(key.split(".")[-2:]): t for key, t in tensors.items()}
    modules = {"1": classifier} if layers == 1 else {"1": pooler.dense, "4": classifier}
    if set(weights) != {f"{index}.{part}" for index in modules for part in ("weight", "bias")}:
        raise ValueError(f"{directory}: the head's weights {sorted(tensors)} are not those of a "
                         f"{layers}-layer classification head.")
    names = {module: name for name, module in model.named_modules()}
    return {f"{names[module]}.{part}": weights[f"{index}.{part}"]
            for index, module in modules.items() for part in ("weight", "bias")}
