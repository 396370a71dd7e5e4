"""Tiny per-task files: a task's trained tensors (safetensors) and a description (JSON) that checks them.

A saved task is a folder with

* ``compacter_model.safetensors``: the tensors the task trained, named as in the task
  (``down.s``, ``shared.A``, ``base.encoder.final_layer_norm.weight`` for its copy of a base
  parameter, ``model.<name>`` for a base parameter trained in place by full / bitfit); its header
  names the seal of the description it was written with;
* ``compacter_config.json``: the task's name, the method config, the base model's fingerprint, name or
  path and a sample of its weights, each tensor's shape, dtype and sha256, a classifier's label
  count, names and problem type (heads.py), the metadata (a run's labels, scores and identity), and a
  seal over all of it (integrity.py);
* ``README.md``: a model card (YAML front matter for the Hugging Face hub).

A folder that holds only these files is written whole beside itself and swapped in with one
exchange of names (io.replace_folder); a folder shared with other files (a Trainer checkpoint, the
root of save_pretrained) gets the files one by one, weights first. Loading is all or nothing
(reading.py checks everything before anything is attached), and a task whose tensors then do not
fit is taken off again, so a failed load leaves the model exactly as it was.

The file names are our own so that PEFT-aware tools (transformers' ``from_pretrained`` and
``load_adapter``, ``PeftModel``) never take the folder for a PEFT adapter. Folders written before
(``adapter_config.json`` + ``adapter_model.safetensors``, format ``compacter-adapter/2`` or 1) still load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from . import __version__, card
from .attach import DEFAULT_TASK, attach_task, delete, rollback
from .container import container_of
from .heads import (
    described_labels,
    fit_head_copies,
    labels_from,
    saved_head_shapes,
    show_labels,
    task_head_shapes,
    task_labels,
)
from .integrity import SEAL, base_sample, seal
from .inventory import architecture_fingerprint, trainable_parameters
from .io import atomic_write, replace_folder
from .names import check_task_name
from .params import count_parameters
from .provenance import code_version
from .reading import (  # noqa: F401 - read_description and read_tensors: saving's public names before reading.py
    CARD_FILE,
    CONFIG_FILE,
    CONFIG_SEAL,
    FORMAT,
    LEGACY_CONFIG_FILE,
    LEGACY_WEIGHTS_FILE,
    WEIGHTS_FILE,
    _sha256,
    check_base,
    read_adapter,
    read_description,
    read_tensors,
    saved_files,
)
from .switching import tasks


def file_name(model_name: str, task: str) -> str:
    """A trained parameter's name in task ``task``'s file, from its name in the model."""
    prefix = f"compacter.tasks.{task}."
    return model_name[len(prefix):] if model_name.startswith(prefix) else f"model.{model_name}"


def file_tensors(model: nn.Module, name: str | None = None,
                 tensors: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Task ``name``'s trained tensors by their names in the file (``tensors`` replaces the model's own, e.g.
    whole copies gathered from shards; its keys are model parameter names, as trainable_parameters gives)."""
    task = container_of(model).task(name)
    tensors = trainable_parameters(model, task.name) if tensors is None else tensors
    return {file_name(key, task.name): value.detach().to("cpu").contiguous() for key, value in tensors.items()}


def save(model: nn.Module, directory: str | os.PathLike, metadata: dict[str, Any] | None = None,
         tensors: dict[str, torch.Tensor] | None = None, *, name: str | None = None) -> Path:
    """Save task ``name``'s (default: the active task's) trained tensors, method config and base fingerprint.

    ``tensors`` replaces the model's own trained parameters (e.g. whole copies gathered from shards).
    """
    container = container_of(model)
    task = container.task(name)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is a file; compacter.save writes a folder there. Give a folder's path.")
    named = file_tensors(model, task.name, tensors)
    labels, head_shapes = task_labels(container, task), task_head_shapes(model, task)
    description = seal({
        "format": FORMAT,
        "compacter_version": __version__,
        "compacter_commit": code_version()["commit"],  # None outside a git checkout (provenance.py)
        "name": task.name,
        "method": task.config.to_dict(),
        "base_model": architecture_fingerprint(model, head_shapes) if head_shapes else container.fingerprint,
        "base_model_name_or_path": getattr(model, "name_or_path", None) or None,
        "base_weights": base_sample(model),
        "num_labels": None if labels is None else len(labels["id2label"]),
        **described_labels(labels),
        "tensors": {key: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "sha256": _sha256(t)}
                    for key, t in named.items()},
        "metadata": metadata or {},
    })
    # the weights name the description they belong to: a reader never pairs one version's with another's
    header = {"format": FORMAT, CONFIG_SEAL: description[SEAL]}
    card = model_card(model, task.name, description)
    text = json.dumps(description, indent=2)
    if _adapter_files_only(directory):  # the folder is the adapter's: all of it replaced in one step
        def write(folder: Path) -> None:
            save_file(named, str(folder / WEIGHTS_FILE), metadata=header)
            (folder / CONFIG_FILE).write_text(text, encoding="utf-8")
            (folder / CARD_FILE).write_text(card, encoding="utf-8")
        replace_folder(directory, write)
    else:  # a folder shared with other files (a Trainer checkpoint, other tasks' folders): file by file
        atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(named, tmp, metadata=header))
        atomic_write(directory / CONFIG_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        atomic_write(directory / CARD_FILE, lambda tmp: Path(tmp).write_text(card, encoding="utf-8"))
    return directory


def _adapter_files_only(directory: Path) -> bool:
    if not directory.exists():
        return True
    return (directory.is_dir() and not directory.is_symlink()
            and all(entry.name in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE) for entry in directory.iterdir()))


def save_pretrained(model: nn.Module, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
    """What ``model.save_pretrained(dir)`` does on a model with tasks: their files only, not the base model.

    As PEFT does: the task named "default" in ``dir`` itself, every other task in ``dir/<name>``;
    ``selected_adapters=[...]`` saves only those tasks. transformers' other arguments (``state_dict``,
    ``safe_serialization``, ...) are accepted and have no use here, except ``is_main_process`` (only the
    main process writes); ``push_to_hub=True`` is the bound method's (compacter.hub).
    """
    if not kwargs.get("is_main_process", True):
        return
    root = Path(save_directory)
    if root.is_file():
        raise ValueError(f"{root} is a file; save_pretrained needs a folder.")
    selected = kwargs.get("selected_adapters") or tasks(model)
    unknown = sorted(set(selected) - set(tasks(model)))
    if unknown:
        raise ValueError(f"selected_adapters names {unknown}, which this model does not have; its tasks are "
                         f"{tasks(model)}.")
    for task_name in tasks(model):
        if task_name in selected:
            save(model, root if task_name == DEFAULT_TASK else root / check_task_name(task_name), name=task_name)


def load_folder(model: nn.Module, directory: str | os.PathLike, *, name: str | None = None,
                strict: bool = False) -> nn.Module:
    """Attach a saved task to ``model`` (its base model, with or without other tasks) as task ``name``.

    ``name`` defaults to the name it was saved under. It becomes the active task. On any error the
    model is left exactly as it was. A base of the right architecture whose sampled weights differ from
    the ones the adapter was saved with gives a warning (``strict=True``: an error).
    """
    if name is not None:
        check_task_name(name, "load(): name")
    description, tensors = read_adapter(directory)
    heads = saved_head_shapes(model, tensors)  # a head of another label count than the base's (heads.py)
    check_base(model, description, directory, strict=strict, heads=heads)
    name = name or description.get("name") or DEFAULT_TASK
    previous = getattr(getattr(model, "compacter", None), "active", None)
    attach_task(model, description["method"], name=name)
    task = container_of(model).task(name)
    try:
        fit_head_copies(task, heads)
        load_tensors(model, tensors, name=name, source=directory)
    except BaseException:
        if task.config.trains_base_in_place:
            rollback(model)
        else:
            delete(model, name)
            if previous in tasks(model):
                container_of(model).set_active(previous)
        raise
    if task.labels is not None:  # a classifier: its label names, count and problem type, as saved
        task.labels = labels_from(description, description.get("num_labels") or len(task.labels["id2label"]))
        show_labels(model, task.labels)
    return model


def load_tensors(model: nn.Module, tensors: dict[str, torch.Tensor], *, name: str | None = None,
                 source: str | os.PathLike = "the file") -> None:
    """Copy saved tensors (file names) into task ``name``'s parameters; all are checked before any is copied."""
    params = trainable_parameters(model, name)
    by_file_name = dict(zip(file_tensors(model, name, params), params.values()))
    missing, unexpected = sorted(set(by_file_name) - set(tensors)), sorted(set(tensors) - set(by_file_name))
    if missing or unexpected:
        raise ValueError(f"The saved parameters in {source} do not match the method's: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}. The file was not written for this method configuration.")
    in_place = container_of(model).task(name).config.trains_base_in_place  # the base's own parameters, in the base's dtype
    for key, tensor in tensors.items():
        target = by_file_name[key]
        if target.shape != tensor.shape:
            raise ValueError(f"Saved parameter {key} has shape {tuple(tensor.shape)} but the model's has "
                             f"{tuple(target.shape)}: the file was not written for this model.")
        if tensor.dtype != target.dtype and not (in_place and tensor.is_floating_point() and target.is_floating_point()):
            raise ValueError(f"Saved parameter {key} is stored as {str(tensor.dtype).removeprefix('torch.')}, but the "
                             f"method trains it in {str(target.dtype).removeprefix('torch.')}: copying it would change "
                             f"its values. {source} was not written by compacter.save for this method.")
    with torch.no_grad():
        for key, tensor in tensors.items():
            by_file_name[key].copy_(tensor)


def model_card(model: nn.Module, name: str, description: dict[str, Any]) -> str:
    """README.md for the hub (card.py): front matter the Hub indexes, a summary, a usage snippet, the metrics."""
    report = count_parameters(model, name)
    names = description.get("id2label") or []
    labels = names if any(label != f"LABEL_{i}" for i, label in enumerate(names)) else None
    return card.model_card(name, description, report.trainable, report.total, labels)


def record_test_metrics(model: nn.Module, directory: str | os.PathLike, test: dict[str, Any]) -> None:
    """Show a scored test split on a saved task's card (training scores it after the last save). Only the card
    changes: the sealed description keeps what was saved, and results.json records the test scores."""
    description = read_description(directory)
    description = {**description, "metadata": {**description.get("metadata", {}), "test": test}}
    text = model_card(model, description["name"], description)
    atomic_write(Path(directory) / CARD_FILE, lambda tmp: Path(tmp).write_text(text))


__all__ = ["CARD_FILE", "CONFIG_FILE", "FORMAT", "LEGACY_CONFIG_FILE", "LEGACY_WEIGHTS_FILE", "WEIGHTS_FILE",
           "check_base", "file_name", "file_tensors", "load_folder", "load_tensors", "model_card", "read_adapter",
           "read_description", "read_tensors", "save", "save_pretrained", "saved_files"]
