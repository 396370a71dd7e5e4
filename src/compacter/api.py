"""The public calls that put tasks on a model, each leaving it ready for the Hugging Face paths users reach for.

``apply`` and ``load`` also bind an adapter-only ``save_pretrained`` to the model instance, so that
``model.save_pretrained(dir)`` (and ``transformers.Trainer``'s checkpoints) write the tasks' small files,
not the whole base model, as PEFT does.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import transformers
from torch import nn

from . import attach, saving
from .interop import peft_tasks
from .methods import MethodConfig
from .models import load_config, load_pretrained


def apply(model: nn.Module, method: str | MethodConfig | dict = "compacter++", *, name: str = attach.DEFAULT_TASK,
          **overrides: Any) -> nn.Module:
    attach.apply(model, method, name=name, **overrides)
    _bind_save_pretrained(model)
    return model


def load(model: nn.Module, directory: str | os.PathLike, *, name: str | None = None,
         strict: bool = False) -> nn.Module:
    if peft_tasks.is_peft_folder(directory):
        peft_tasks.load_peft(model, directory, name=name)
    else:
        saving.load(model, directory, name=name, strict=strict)
    _bind_save_pretrained(model)
    return model


apply.__doc__ = attach.apply.__doc__
load.__doc__ = saving.load.__doc__ + """
    A folder that PEFT wrote (a LoRA or (IA)³ adapter: its adapter_config.json names a ``peft_type``) is read too
    (interop/peft_tasks.py), as a task of compacter's ``lora`` or ``ia3`` method.
    """


def _bind_save_pretrained(model: nn.Module) -> None:
    if hasattr(model, "save_pretrained"):
        model.save_pretrained = functools.partial(saving.save_pretrained, model)


def from_pretrained(base_name_or_path: str | os.PathLike, adapter_dir: str | os.PathLike | None = None, *,
                    name: str | None = None, strict: bool = False, **from_pretrained_kwargs: Any) -> nn.Module:
    """The base model with a saved task on it: ``compacter.from_pretrained("t5-base", "runs/rte/adapter")``.

    With one argument, it is the adapter folder and the base model is the one recorded in it
    (``base_model_name_or_path``). Other keyword arguments go to the base's ``from_pretrained``
    (``torch_dtype``, ``device_map``, ``quantization_config`` ...). The model class is the one the task
    was trained on (e.g. T5ForConditionalGeneration, BertForSequenceClassification with its label count).
    """
    if adapter_dir is None:
        adapter_dir, base_name_or_path = base_name_or_path, None
    return load(base_model_for(adapter_dir, base_name_or_path, **from_pretrained_kwargs), adapter_dir, name=name,
                strict=strict)


def base_model_for(adapter_dir: str | os.PathLike, base_name_or_path: str | os.PathLike | None = None,
                   **from_pretrained_kwargs: Any) -> nn.Module:
    """The bare base model a saved task was trained on (its class and label count), not yet carrying the task."""
    description = saving.read_description(adapter_dir)
    path = Path(adapter_dir) / saving.CONFIG_FILE
    if base_name_or_path is None:
        base_name_or_path = description.get("base_model_name_or_path")
        if not base_name_or_path or not isinstance(base_name_or_path, str):
            raise ValueError(f"{path} does not record its base model as a name or path (it has "
                             f"{base_name_or_path!r}); pass it: compacter.from_pretrained(base_name_or_path, adapter_dir).")
        if base_name_or_path.startswith(("/", ".", "~")) and not Path(base_name_or_path).expanduser().is_dir():
            raise FileNotFoundError(f"{path} records its base model as the folder {base_name_or_path}, which does not "
                                    "exist here; pass the base model: compacter.from_pretrained(base_name_or_path, "
                                    "adapter_dir).")
    model_class = _model_class(description["base_model"].get("class"))
    trained_on = description["base_model"].get("model_type")
    given = getattr(load_config(str(base_name_or_path)), "model_type", None)
    if trained_on and given and given != trained_on:
        raise ValueError(f"The adapter in {adapter_dir} was trained on a {trained_on} model "
                         f"({description['base_model'].get('class')}), and {base_name_or_path} is a {given} model. Give "
                         "the base model it was trained on.")
    num_labels = description.get("num_labels")
    if num_labels is not None and (isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1):
        raise ValueError(f"{path}: 'num_labels' must be a whole number ≥ 1 or null, got {num_labels!r}. The file was "
                         "edited or damaged; save the adapter again.")
    if num_labels is not None:
        from_pretrained_kwargs.setdefault("num_labels", num_labels)
    return load_pretrained(model_class, str(base_name_or_path), **from_pretrained_kwargs)


def _model_class(class_name: str | None) -> type:
    """transformers' class of that name (only a PreTrainedModel subclass: a file's text picks nothing else)."""
    candidate = getattr(transformers, class_name, None) if isinstance(class_name, str) else None
    if isinstance(candidate, type) and issubclass(candidate, transformers.PreTrainedModel):
        return candidate
    raise ValueError(f"The saved task's base model class {class_name!r} is not a transformers model class; build "
                     "the base model yourself and call compacter.load(model, adapter_dir).")
