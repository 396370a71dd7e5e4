"""Tiny per-task files: only what was trained (safetensors) plus its config and base fingerprint."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .attach import apply, architecture_fingerprint, attached_config, trainable_parameters
from .io import atomic_write

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
FORMAT = "compacter-adapter/1"


def save(model: nn.Module, directory: str | os.PathLike, metadata: dict[str, Any] | None = None,
         tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Save the trained parameters of an attached model, with the method config and base fingerprint.

    ``tensors`` replaces the model's own trained parameters (e.g. full copies gathered from shards).
    """
    config = attached_config(model)
    directory = Path(directory)
    if tensors is None:
        tensors = trainable_parameters(model)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    description = {
        "format": FORMAT,
        "compacter_version": __version__,
        "method": config.to_dict(),
        "base_model": model.compacter.fingerprint,
        "metadata": metadata or {},
    }
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}))
    atomic_write(directory / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(description, indent=2)))
    return directory


def read_description(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {directory} is not a folder written by compacter.save().")
    try:
        description = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the saved adapter is damaged.") from None
    if description.get("format") != FORMAT:
        raise ValueError(f"{path} has format {description.get('format')!r}; this compacter reads {FORMAT!r}.")
    return description


def load(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """Attach the saved method to a fresh copy of its base model and load the trained parameters."""
    if hasattr(model, "compacter"):
        raise ValueError("This model already has a method attached; load the adapter onto a fresh copy of the base model.")
    description = read_description(directory)
    expected, actual = description["base_model"], architecture_fingerprint(model)
    if expected != actual:
        differences = [f"{key}: saved for {expected.get(key)!r}, this model has {actual.get(key)!r}"
                       for key in sorted(set(expected) | set(actual)) if expected.get(key) != actual.get(key)]
        raise ValueError(
            f"The adapter in {directory} was trained on a different base model and does not fit this one:\n  "
            + "\n  ".join(differences)
            + "\nLoad it onto the base model it was trained on (a fresh copy, with no method attached)."
        )
    apply(model, description["method"])
    tensors = load_file(str(Path(directory) / WEIGHTS_FILE))
    params = trainable_parameters(model)
    missing, unexpected = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise ValueError(f"The saved parameters in {directory} do not match the method's: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}. The file was not written for this method configuration.")
    with torch.no_grad():
        for name, tensor in tensors.items():
            if params[name].shape != tensor.shape:
                raise ValueError(f"Saved parameter {name} has shape {tuple(tensor.shape)} but the model's has "
                                 f"{tuple(params[name].shape)}.")
            params[name].copy_(tensor)
    return model
