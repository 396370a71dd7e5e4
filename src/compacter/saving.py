"""Tiny per-task files: a task's trained tensors (safetensors) and a description (JSON) that checks them.

A saved task is a folder with

* ``adapter_model.safetensors``: the tensors the task trained, named as in the task
  (``down.s``, ``shared.A``, ``base.encoder.final_layer_norm.weight`` for its copy of a base
  parameter, ``model.<name>`` for a base parameter trained in place by full / bitfit);
* ``adapter_config.json``: the method config, the base model's fingerprint, the base model's name
  or path, and each tensor's shape, dtype and sha256;
* ``README.md``: a model card (YAML front matter for the Hugging Face hub).

Loading is all or nothing: the description and every tensor are checked (well-formed JSON with
the expected fields, a valid method config, intact safetensors, finite values, the recorded
checksums, the base model's fingerprint) before anything is attached, and a task whose tensors
then do not fit is taken off again, so a failed load leaves the model exactly as it was.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file
from torch import nn

from . import __version__
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
from .integrity import SEAL, base_differences, base_sample, is_sealed, seal
from .io import atomic_write, read_files, replace_folder
from .methods import get_config
from .names import check_task_name
from .params import count_parameters

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
CARD_FILE = "README.md"
FORMAT = "compacter-adapter/2"
OLD_FORMAT = "compacter-adapter/1"  # before named tasks: still read
CONFIG_SEAL = "adapter_config_sha256"  # in the weights' header: the seal of the description they belong to


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
    description = seal({
        "format": FORMAT,
        "compacter_version": __version__,
        "name": task.name,
        "method": task.config.to_dict(),
        "base_model": container.fingerprint,
        "base_model_name_or_path": getattr(model, "name_or_path", None) or None,
        "base_weights": base_sample(model),
        "num_labels": _num_labels(model),
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

    As PEFT does: the task named "default" in ``dir`` itself, every other task in ``dir/<name>``.
    transformers' own arguments (``state_dict``, ``safe_serialization``, ...) are accepted and have no use
    here, except ``is_main_process`` (only the main process writes).
    """
    if not kwargs.get("is_main_process", True):
        return
    if kwargs.get("push_to_hub"):
        raise ValueError("compacter does not push to the hub; save_pretrained(dir) and upload the folder yourself.")
    root = Path(save_directory)
    if root.is_file():
        raise ValueError(f"{root} is a file; save_pretrained needs a folder.")
    for task_name in tasks(model):
        save(model, root if task_name == DEFAULT_TASK else root / check_task_name(task_name), name=task_name)


def read_description(directory: str | os.PathLike, *, own: bool = False) -> dict[str, Any]:
    """The adapter_config.json of a saved task, checked field by field (and against its seal); ``own`` as in
    ``read_adapter``."""
    folder = _folder(directory, own=own)
    try:
        content = read_files(folder, [CONFIG_FILE], follow_symlinks=not own)[CONFIG_FILE]
    except OSError as error:
        raise _linked(folder) if error.errno == errno.ELOOP else error from None
    return _description(folder, content)


def _folder(directory: str | os.PathLike, *, own: bool = False) -> Path:
    """``directory`` when it is a folder (``own``: a real one, not a symbolic link to another)."""
    directory = Path(directory)
    if own and directory.is_symlink():
        raise ValueError(f"{directory} is a symbolic link (to {os.readlink(directory)}), not the run's own adapter "
                         "folder: a run's adapter is never taken from elsewhere.")
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a folder written by compacter.save(): it does not exist or is a file.")
    return directory


def _description(directory: Path, content: bytes | None) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if content is None:
        raise FileNotFoundError(f"{path} does not exist: {directory} is not a folder written by compacter.save().")
    try:
        description = json.loads(content.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text; the saved adapter is damaged. Save it again.") from None
    except (json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the saved adapter is damaged. Save it again.") from None
    if not isinstance(description, dict):
        raise ValueError(f"{path} must hold a JSON object, not {type(description).__name__}.")
    if description.get("format") not in (FORMAT, OLD_FORMAT):
        raise ValueError(f"{path} has format {description.get('format')!r}; this compacter reads {FORMAT!r}.")
    is_sealed(description, path, "Save the adapter again.")
    expected = {"method": dict, "base_model": dict}
    if description["format"] == FORMAT:
        expected.update({"tensors": dict, "name": str})
    for key, kind in expected.items():
        if not isinstance(description.get(key), kind):
            found = "missing" if key not in description else f"a {type(description[key]).__name__}"
            raise ValueError(f"{path}: '{key}' must be a JSON {'object' if kind is dict else 'string'}, but it is "
                             f"{found}. The file was edited or damaged; save the adapter again.")
    if "name" in description:
        check_task_name(description["name"], f"{path}: its task 'name'")
    if not isinstance(description.get("base_weights", {}), dict):
        raise ValueError(f"{path}: 'base_weights' must be a JSON object. The file was edited or damaged; save the "
                         "adapter again.")
    try:
        get_config(description["method"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: its method config is not valid ({error}). The file was edited or damaged; "
                         "save the adapter again.") from None
    for key, entry in description.get("tensors", {}).items():
        if not (isinstance(entry, dict) and isinstance(entry.get("shape"), list) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("dtype"), str)):
            raise ValueError(f"{path}: the entry of tensor {key!r} must give its 'shape', 'dtype' and 'sha256'.")
    return description


def read_adapter(directory: str | os.PathLike, *, own: bool = False) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A saved task's description and tensors, both from one version of its folder, every check passed.

    ``own``: the folder is a run's own adapter: it, and its files, may not be symbolic links to elsewhere.
    """
    folder = _folder(directory, own=own)
    for attempt in range(3):
        try:
            files = read_files(folder, [CONFIG_FILE, WEIGHTS_FILE], follow_symlinks=not own)
        except OSError as error:
            raise _linked(folder) if error.errno == errno.ELOOP else error from None
        description = _description(folder, files[CONFIG_FILE])
        tensors, paired = _tensors(folder, description, files[WEIGHTS_FILE])
        if paired or attempt == 2:
            break
        time.sleep(0.1)  # a writer is replacing the files one by one (a shared folder): read its finished version
    if not paired:
        raise ValueError(f"{folder / WEIGHTS_FILE} was written with another {CONFIG_FILE} than the one beside it: the "
                         "two files do not belong together. Save the adapter again.")
    return description, tensors


def _linked(folder: Path) -> ValueError:
    return ValueError(f"{folder} holds a symbolic link where the run's own adapter files belong; a run's adapter is "
                      "never taken from elsewhere.")


def read_tensors(directory: str | os.PathLike, description: dict[str, Any] | None = None, *,
                 own: bool = False) -> dict[str, torch.Tensor]:
    """The saved tensors, checked against the description: names, shapes, dtypes, checksums, finite values."""
    found, tensors = read_adapter(directory, own=own)
    if description is not None and description != found:
        raise ValueError(f"{Path(directory) / CONFIG_FILE} changed while it was read; read it again.")
    return tensors


def _tensors(directory: Path, description: dict[str, Any],
             content: bytes | None) -> tuple[dict[str, torch.Tensor], bool]:
    """The tensors of the weights file, checked; and whether the file names this description as its own."""
    path = directory / WEIGHTS_FILE
    if content is None:
        raise FileNotFoundError(f"{path} does not exist: the saved adapter in {directory} is incomplete. Save it again.")
    try:
        tensors = load_bytes(content)
        header = _header(content)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ValueError(f"{path} could not be read as safetensors ({error}); the file is truncated or damaged. "
                         "Save the adapter again.") from None
    if SEAL in description and header.get(CONFIG_SEAL) not in (None, description[SEAL]):
        return tensors, False
    if description["format"] == OLD_FORMAT:
        tensors = _from_old_names(tensors, description["method"])
    else:
        manifest = description["tensors"]
        if set(manifest) != set(tensors):
            missing, extra = sorted(set(manifest) - set(tensors)), sorted(set(tensors) - set(manifest))
            raise ValueError(f"{path} does not hold the tensors {CONFIG_FILE} lists (missing {missing[:5]}, unlisted "
                             f"{extra[:5]}). The two files do not belong together; save the adapter again.")
        for key, tensor in tensors.items():
            dtype = str(tensor.dtype).removeprefix("torch.")
            if dtype != manifest[key]["dtype"]:
                raise ValueError(f"{path}: tensor {key!r} is stored as {dtype}, but {CONFIG_FILE} records "
                                 f"{manifest[key]['dtype']}: the file was changed after it was saved. Save the adapter "
                                 "again.")
            if list(tensor.shape) != manifest[key]["shape"] or _sha256(tensor) != manifest[key]["sha256"]:
                raise ValueError(f"{path}: tensor {key!r} does not match the checksum recorded in {CONFIG_FILE}: "
                                 "the file was changed or damaged after it was saved. Save the adapter again.")
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{path}: tensor {key!r} holds NaN or infinite values; a model loaded from it would "
                             "compute nothing useful. Save a checkpoint from before the training diverged.")
    return tensors, True


def _header(content: bytes) -> dict[str, str]:
    """The metadata of a safetensors file's header (its first 8 bytes give the header's length)."""
    length = int.from_bytes(content[:8], "little")
    return json.loads(content[8:8 + length]).get("__metadata__") or {}


def check_base(model: nn.Module, description: dict[str, Any], directory: str | os.PathLike, *,
               strict: bool = False) -> None:
    """The base model is the one the adapter was trained on: its architecture (an error), and a sample of its weights
    (a warning; an error with ``strict``). Where weights are quantized or offloaded they are not compared."""
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
    changed = base_differences(model, description.get("base_weights") or {})
    if changed:
        message = (f"The adapter in {directory} was trained on a base model of this architecture with other weights "
                   f"({len(changed)} of the {len(description['base_weights'])} weights sampled at save differ, e.g. "
                   f"{changed[0]}): its outputs on this base are not the ones it was trained for. Load it onto "
                   f"{description.get('base_model_name_or_path') or 'the base model it was trained on'}.")
        if strict:
            raise ValueError(message)
        warnings.warn(message, UserWarning, stacklevel=3)


def load(model: nn.Module, directory: str | os.PathLike, *, name: str | None = None,
         strict: bool = False) -> nn.Module:
    """Attach a saved task to ``model`` (its base model, with or without other tasks) as task ``name``.

    ``name`` defaults to the name it was saved under. It becomes the active task. On any error the
    model is left exactly as it was. A base of the right architecture whose sampled weights differ from
    the ones the adapter was saved with gives a warning (``strict=True``: an error).
    """
    if name is not None:
        check_task_name(name, "load(): name")
    description, tensors = read_adapter(directory)
    check_base(model, description, directory, strict=strict)
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
    in_place = container_of(model).task(name).config.in_base  # the base's own parameters, in the base's dtype
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
    """README.md for the hub: YAML front matter (library, base model, method, % trained, metrics) and a summary."""
    report = count_parameters(model, name)
    metadata = description.get("metadata") or {}
    metrics = {key: value for key, value in (metadata.get("test") or metadata.get("validation") or {}).items()
               if isinstance(value, (int, float)) and key not in ("n", "invalid")}
    base = description.get("base_model_name_or_path")
    front = {"library_name": "compacter", "base_model": base, "tags": ["compacter", description["method"]["name"],
                                                                       "parameter-efficient-fine-tuning"],
             "compacter": {"method": description["method"]["name"], "task": name,
                           "trained_parameters": report.trainable, "trained_percent": round(report.percent, 4)}}
    if metrics:
        front["compacter"]["metrics"] = {key: round(value, 4) for key, value in metrics.items()}
    if base is None:
        del front["base_model"]
    import yaml

    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
             f"# {name}: {description['method']['name']} on {base or 'its base model'}", "",
             f"Trained with [compacter](https://github.com/rabeehk/compacter): {report.trainable:,} trained parameters, "
             f"{report.percent:.4f}% of the base model's {report.total:,}.", "",
             "```python", "import compacter", "", f"model = compacter.from_pretrained({base!r}, \"path/to/this/folder\")"
             if base else "model = compacter.load(base_model, \"path/to/this/folder\")", "```"]
    if metrics:
        lines += ["", "| metric | value |", "|---|---:|", *(f"| {key} | {value:.2f} |" for key, value in metrics.items())]
    return "\n".join(lines) + "\n"


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


__all__ = ["CARD_FILE", "CONFIG_FILE", "FORMAT", "WEIGHTS_FILE", "check_base", "file_name", "file_tensors", "load",
           "load_tensors", "model_card", "read_adapter", "read_description", "read_tensors", "save", "save_pretrained"]
