"""Reading a saved task's folder: every check before anything is attached (see saving.py for the format).

The description (``compacter_config.json``) is checked field by field and against its seal; the weights
(``compacter_model.safetensors``) against the description: the description they name in their header,
each tensor's name, shape, dtype and checksum, finite values. Both files are read from one version of
the folder (io.read_files), so that a save running at the same time is seen whole or not at all. The
base model is checked by its architecture and a sample of its weights (integrity.py).
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
from torch import nn

from .heads import PROBLEM_TYPES
from .integrity import SEAL, base_differences, is_sealed
from .inventory import architecture_fingerprint
from .io import read_files
from .methods import get_config
from .names import check_task_name

CONFIG_FILE = "compacter_config.json"
WEIGHTS_FILE = "compacter_model.safetensors"
# PEFT's file names, which compacter wrote until 0.2: still read (ours now, so that PEFT-aware tools never take our
# folders for theirs)
LEGACY_CONFIG_FILE = "adapter_config.json"
LEGACY_WEIGHTS_FILE = "adapter_model.safetensors"
CARD_FILE = "README.md"
FORMAT = "compacter-adapter/2"
OLD_FORMAT = "compacter-adapter/1"  # before named tasks: still read
CONFIG_SEAL = "adapter_config_sha256"  # in the weights' header: the seal of the description they belong to


def saved_files(directory: str | os.PathLike) -> tuple[Path, Path]:
    """(description, tensors) paths of a saved task: today's names, or the names written before 0.3."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file() and (directory / LEGACY_CONFIG_FILE).is_file():
        return directory / LEGACY_CONFIG_FILE, directory / LEGACY_WEIGHTS_FILE
    return directory / CONFIG_FILE, directory / WEIGHTS_FILE


def read_description(directory: str | os.PathLike, *, own: bool = False) -> dict[str, Any]:
    """The compacter_config.json of a saved task, checked field by field (and against its seal); ``own`` as in
    ``read_adapter``."""
    folder = _folder(directory, own=own)
    config = saved_files(folder)[0].name
    try:
        content = read_files(folder, [config], follow_symlinks=not own)[config]
    except OSError as error:
        raise _linked(folder) if error.errno == errno.ELOOP else error from None
    return _description(folder, content, config)


def _folder(directory: str | os.PathLike, *, own: bool = False) -> Path:
    """``directory`` when it is a folder (``own``: a real one, not a symbolic link to another)."""
    directory = Path(directory)
    if own and directory.is_symlink():
        raise ValueError(f"{directory} is a symbolic link (to {os.readlink(directory)}), not the run's own adapter "
                         "folder: a run's adapter is never taken from elsewhere.")
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a folder written by compacter.save(): it does not exist or is a file.")
    return directory


def _description(directory: Path, content: bytes | None, config: str) -> dict[str, Any]:
    path = directory / config
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
        what = (f"a PEFT {description['peft_type']} adapter" if "peft_type" in description
                else f"of format {description.get('format')!r}")
        raise ValueError(f"{path} is {what}, not a task saved by compacter (format {FORMAT!r}); compacter.load reads "
                         "its own folders, PEFT's LoRA and (IA)³ folders and AdapterHub's.")
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
    _check_labels(description, path)
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


def _check_labels(description: dict[str, Any], path: Path) -> None:
    """A classifier's saved labels (heads.py): names, one per label, and transformers' problem type."""
    names, count = description.get("id2label"), description.get("num_labels")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)
                                  and len(set(names)) == len(names) and len(names) == count):
        raise ValueError(f"{path}: 'id2label' must list {count} distinct label names (one per label, 'num_labels'), "
                         f"got {names!r}. The file was edited or damaged; save the adapter again.")
    if description.get("problem_type") not in (None, *PROBLEM_TYPES):
        raise ValueError(f"{path}: 'problem_type' must be one of {', '.join(PROBLEM_TYPES)} or null, got "
                         f"{description['problem_type']!r}. The file was edited or damaged; save the adapter again.")


def read_adapter(directory: str | os.PathLike, *, own: bool = False) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A saved task's description and tensors, both from one version of its folder, every check passed.

    ``own``: the folder is a run's own adapter: it, and its files, may not be symbolic links to elsewhere.
    """
    folder = _folder(directory, own=own)
    config, weights = (path.name for path in saved_files(folder))
    for attempt in range(3):
        try:
            files = read_files(folder, [config, weights], follow_symlinks=not own)
        except OSError as error:
            raise _linked(folder) if error.errno == errno.ELOOP else error from None
        description = _description(folder, files[config], config)
        tensors, paired = _tensors(folder, description, files[weights], (config, weights))
        if paired or attempt == 2:
            break
        time.sleep(0.1)  # a writer is replacing the files one by one (a shared folder): read its finished version
    if not paired:
        raise ValueError(f"{folder / weights} was written with another {config} than the one beside it: the "
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
        raise ValueError(f"{saved_files(directory)[0]} changed while it was read; read it again.")
    return tensors


def _tensors(directory: Path, description: dict[str, Any], content: bytes | None,
             names: tuple[str, str]) -> tuple[dict[str, torch.Tensor], bool]:
    """The tensors of the weights file, checked; and whether the file names this description as its own."""
    config, weights = names
    path = directory / weights
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
            raise ValueError(f"{path} does not hold the tensors {config} lists (missing {missing[:5]}, unlisted "
                             f"{extra[:5]}). The two files do not belong together; save the adapter again.")
        for key, tensor in tensors.items():
            dtype = str(tensor.dtype).removeprefix("torch.")
            if dtype != manifest[key]["dtype"]:
                raise ValueError(f"{path}: tensor {key!r} is stored as {dtype}, but {config} records "
                                 f"{manifest[key]['dtype']}: the file was changed after it was saved. Save the adapter "
                                 "again.")
            if list(tensor.shape) != manifest[key]["shape"] or _sha256(tensor) != manifest[key]["sha256"]:
                raise ValueError(f"{path}: tensor {key!r} does not match the checksum recorded in {config}: "
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
               strict: bool = False, heads: dict[str, tuple[int, ...]] | None = None) -> None:
    """The base model is the one the adapter was trained on: its architecture (an error), and a sample of its weights
    (a warning; an error with ``strict``). Where weights are quantized or offloaded they are not compared.
    ``heads``: the saved task's own head shapes (another label count than this model's head, heads.py)."""
    container = getattr(model, "compacter", None)
    if heads:
        actual = architecture_fingerprint(model, heads)
    else:
        actual = container.fingerprint if container is not None else architecture_fingerprint(model)
    expected = description["base_model"]
    trained_with, pools = expected.get("pooling", "cls"), actual.get("pooling", "cls")
    if trained_with != pools:
        raise ValueError(f"The adapter in {directory} was trained on a base that pools its tokens by {trained_with!r} "
                         f"and this model pools them by {pools!r}. compacter.from_pretrained(adapter_dir) builds the "
                         f"base that way; or call compacter.set_pooling(base, {trained_with!r}) on a fresh base before "
                         "compacter.load.")
    if expected != actual:
        differences = [f"{key}: saved for {expected.get(key)!r}, this model has {actual.get(key)!r}"
                       for key in sorted(set(expected) | set(actual)) if expected.get(key) != actual.get(key)]
        recorded = description.get("base_model_name_or_path")
        raise ValueError(
            f"The adapter in {directory} was trained on a different base model and does not fit this one:\n  "
            + "\n  ".join(differences)
            + f"\nLoad it onto the base model it was trained on{f' ({recorded})' if recorded else ''}: "
            "compacter.from_pretrained(adapter_dir) builds that base with the task on it."
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


def _sha256(tensor: torch.Tensor) -> str:
    data = tensor.detach().to("cpu").contiguous().reshape(-1)
    return hashlib.sha256(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"").hexdigest()


def _from_old_names(tensors: dict[str, torch.Tensor], method: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Files of format 1 named tensors by model parameter name: ``compacter.down.s``, base names for the rest."""
    in_place = get_config(method).trains_base_in_place
    return {key.removeprefix("compacter.") if key.startswith("compacter.") else
            (f"model.{key}" if in_place else f"base.{key}"): value for key, value in tensors.items()}


__all__ = ["CARD_FILE", "CONFIG_FILE", "CONFIG_SEAL", "FORMAT", "LEGACY_CONFIG_FILE", "LEGACY_WEIGHTS_FILE", "OLD_FORMAT",
           "WEIGHTS_FILE", "saved_files", "check_base",
           "read_adapter", "read_description", "read_tensors"]
