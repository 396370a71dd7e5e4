"""Tiny per-task files: a task's trained tensors (safetensors) and a description (JSON) that checks them.

A saved task is a folder with

* ``compacter_model.safetensors``: the tensors the task trained, named as in the task
  (``down.s``, ``shared.A``, ``base.encoder.final_layer_norm.weight`` for its copy of a base
  parameter, ``model.<name>`` for a base parameter trained in place by full / bitfit);
* ``compacter_config.json``: the method config, the base model's fingerprint, the base model's name
  or path, and each tensor's shape, dtype and sha256;
* ``README.md``: a model card (YAML front matter for the Hugging Face hub).

The file names are our own so that PEFT-aware tools (transformers' ``from_pretrained`` and
``load_adapter``, ``PeftModel``) never take the folder for a PEFT adapter. Folders written before
(``adapter_config.json`` + ``adapter_model.safetensors``, format ``compacter-adapter/2`` or 1) still load.

Loading is all or nothing: the description and every tensor are checked (well-formed JSON with
the expected fields, a valid method config, intact safetensors, finite values, the recorded
checksums, the base model's fingerprint) before anything is attached, and a task whose tensors
then do not fit is taken off again, so a failed load leaves the model exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__, card
from .attach import (
    DEFAULT_TASK,
    apply,
    architecture_fingerprint,
    container_of,
    delete,
    rollback,
    tasks,
    trainable_parameters,
)
from .io import atomic_write
from .methods import get_config
from .params import count_parameters

CONFIG_FILE = "compacter_config.json"
WEIGHTS_FILE = "compacter_model.safetensors"
LEGACY_CONFIG_FILE = "adapter_config.json"  # PEFT's names, which compacter 0.2 wrote: still read
LEGACY_WEIGHTS_FILE = "adapter_model.safetensors"
CARD_FILE = "README.md"
FORMAT = "compacter-adapter/2"
OLD_FORMAT = "compacter-adapter/1"  # before named tasks: still read


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
    named = file_tensors(model, task.name, tensors)
    description = {
        "format": FORMAT,
        "compacter_version": __version__,
        "name": task.name,
        "method": task.config.to_dict(),
        "base_model": container.fingerprint,
        "base_model_name_or_path": getattr(model, "name_or_path", None) or None,
        "num_labels": _num_labels(model),
        "tensors": {key: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "sha256": _sha256(t)}
                    for key, t in named.items()},
        "metadata": metadata or {},
    }
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(named, tmp, metadata={"format": FORMAT}))
    atomic_write(directory / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(description, indent=2)))
    card = model_card(model, task.name, description)
    atomic_write(directory / CARD_FILE, lambda tmp: Path(tmp).write_text(card))
    return directory


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
            save(model, root if task_name == DEFAULT_TASK else root / task_name, name=task_name)


def saved_files(directory: str | os.PathLike) -> tuple[Path, Path]:
    """(description, tensors) paths of a saved task: today's names, or the names written before 0.2."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file() and (directory / LEGACY_CONFIG_FILE).is_file():
        return directory / LEGACY_CONFIG_FILE, directory / LEGACY_WEIGHTS_FILE
    return directory / CONFIG_FILE, directory / WEIGHTS_FILE


def read_description(directory: str | os.PathLike) -> dict[str, Any]:
    """The compacter_config.json of a saved task, checked field by field."""
    path = saved_files(directory)[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {directory} is not a folder written by compacter.save().")
    try:
        description = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text; the saved adapter is damaged. Save it again.") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the saved adapter is damaged. Save it again.") from None
    if not isinstance(description, dict):
        raise ValueError(f"{path} must hold a JSON object, not {type(description).__name__}.")
    if description.get("format") not in (FORMAT, OLD_FORMAT):
        what = f"a PEFT {description['peft_type']} adapter" if "peft_type" in description else \
            f"format {description.get('format')!r}"
        raise ValueError(f"{path} is {what}, not a task saved by compacter (format {FORMAT!r}); compacter.load reads "
                         "its own folders and AdapterHub's.")
    expected = {"method": dict, "base_model": dict}
    if description["format"] == FORMAT:
        expected.update({"tensors": dict, "name": str})
    for key, kind in expected.items():
        if not isinstance(description.get(key), kind):
            found = "missing" if key not in description else f"a {type(description[key]).__name__}"
            raise ValueError(f"{path}: '{key}' must be a JSON {'object' if kind is dict else 'string'}, but it is "
                             f"{found}. The file was edited or damaged; save the adapter again.")
    try:
        get_config(description["method"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: its method config is not valid ({error}). The file was edited or damaged; "
                         "save the adapter again.") from None
    for key, entry in description.get("tensors", {}).items():
        if not (isinstance(entry, dict) and isinstance(entry.get("shape"), list) and isinstance(entry.get("sha256"), str)):
            raise ValueError(f"{path}: the entry of tensor {key!r} must give its 'shape' and 'sha256'.")
    return description


def read_tensors(directory: str | os.PathLike, description: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """The saved tensors, checked against the description: names, shapes, checksums, finite values."""
    directory = Path(directory)
    description = description or read_description(directory)
    config_path, path = saved_files(directory)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the saved adapter in {directory} is incomplete. Save it again.")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ValueError(f"{path} could not be read as safetensors ({error}); the file is truncated or damaged. "
                         "Save the adapter again.") from None
    if description["format"] == OLD_FORMAT:
        tensors = _from_old_names(tensors, description["method"])
    else:
        manifest = description["tensors"]
        if set(manifest) != set(tensors):
            missing, extra = sorted(set(manifest) - set(tensors)), sorted(set(tensors) - set(manifest))
            raise ValueError(f"{path} does not hold the tensors {config_path.name} lists (missing {missing[:5]}, unlisted "
                             f"{extra[:5]}). The two files do not belong together; save the adapter again.")
        for key, tensor in tensors.items():
            if list(tensor.shape) != manifest[key]["shape"] or _sha256(tensor) != manifest[key]["sha256"]:
                raise ValueError(f"{path}: tensor {key!r} does not match the checksum recorded in {config_path.name}: "
                                 "the file was changed or damaged after it was saved. Save the adapter again.")
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{path}: tensor {key!r} holds NaN or infinite values; a model loaded from it would "
                             "compute nothing useful. Save a checkpoint from before the training diverged.")
    return tensors


def load(model: nn.Module, directory: str | os.PathLike, *, name: str | None = None) -> nn.Module:
    """Attach a saved task to ``model`` (its base model, with or without other tasks) as task ``name``.

    ``name`` defaults to the name it was saved under. It becomes the active task. On any error the
    model is left exactly as it was.
    """
    description = read_description(directory)
    tensors = read_tensors(directory, description)
    container = getattr(model, "compacter", None)
    actual = container.fingerprint if container is not None else architecture_fingerprint(model)
    expected = description["base_model"]
    if expected != actual:
        differences = [f"{key}: saved for {expected.get(key)!r}, this model has {actual.get(key)!r}"
                       for key in sorted(set(expected) | set(actual)) if expected.get(key) != actual.get(key)]
        raise ValueError(
            f"The adapter in {directory} was trained on a different base model and does not fit this one:\n  "
            + "\n  ".join(differences)
            + "\nLoad it onto the base model it was trained on."
        )
    name = name or description.get("name") or DEFAULT_TASK
    apply(model, description["method"], name=name)
    try:
        load_tensors(model, tensors, name=name, source=directory)
    except BaseException:
        if container_of(model).task(name).config.in_base:
            rollback(model)
        else:
            delete(model, name)
        raise
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
    for key, tensor in tensors.items():
        if by_file_name[key].shape != tensor.shape:
            raise ValueError(f"Saved parameter {key} has shape {tuple(tensor.shape)} but the model's has "
                             f"{tuple(by_file_name[key].shape)}: the file was not written for this model.")
    with torch.no_grad():
        for key, tensor in tensors.items():
            by_file_name[key].copy_(tensor)


def model_card(model: nn.Module, name: str, description: dict[str, Any]) -> str:
    """README.md for the hub (card.py): front matter the Hub indexes, a summary, a usage snippet, the metrics."""
    report = count_parameters(model, name)
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    labels = [id2label[i] for i in sorted(id2label)] if _num_labels(model) and any(
        str(label) != f"LABEL_{i}" for i, label in id2label.items()) else None
    return card.model_card(name, description, report.trainable, report.total, labels)


def record_test_metrics(model: nn.Module, directory: str | os.PathLike, test: dict[str, Any]) -> None:
    """Add a scored test split to a saved task's description and card (training scores it after the last save)."""
    config_path = saved_files(directory)[0]
    description = read_description(directory)
    description.setdefault("metadata", {})["test"] = test
    atomic_write(config_path, lambda tmp: Path(tmp).write_text(json.dumps(description, indent=2)))
    text = model_card(model, description["name"], description)
    atomic_write(Path(directory) / CARD_FILE, lambda tmp: Path(tmp).write_text(text))


def _sha256(tensor: torch.Tensor) -> str:
    data = tensor.detach().to("cpu").contiguous().reshape(-1)
    return hashlib.sha256(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"").hexdigest()


def _num_labels(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    architectures = getattr(config, "architectures", None) or [type(model).__name__]
    if any(a.endswith("ForSequenceClassification") for a in architectures) or type(model).__name__.endswith(
            "ForSequenceClassification"):
        return getattr(config, "num_labels", None)
    return None


def _from_old_names(tensors: dict[str, torch.Tensor], method: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Files of format 1 named tensors by model parameter name: ``compacter.down.s``, base names for the rest."""
    in_base = get_config(method).in_base
    return {key.removeprefix("compacter.") if key.startswith("compacter.") else
            (f"model.{key}" if in_base else f"base.{key}"): value for key, value in tensors.items()}


__all__ = ["CARD_FILE", "CONFIG_FILE", "FORMAT", "LEGACY_CONFIG_FILE", "LEGACY_WEIGHTS_FILE", "WEIGHTS_FILE", "file_name",
           "file_tensors", "load", "load_tensors", "model_card", "read_description", "read_tensors", "record_test_metrics",
           "save", "save_pretrained", "saved_files"]
