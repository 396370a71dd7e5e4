"""The public calls that put tasks on a model, each leaving it ready for the Hugging Face paths users reach for.

``apply`` and ``load`` also bind an adapter-only ``save_pretrained`` to the model instance, so that
``model.save_pretrained(dir)`` (and ``transformers.Trainer``'s checkpoints) write the tasks' small files,
not the whole base model, as PEFT does; and compacter's versions of transformers' ``push_to_hub``,
``set_adapter``, ``load_adapter``, ``active_adapters`` ... (bindings.py).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import transformers
from torch import nn

from . import attach, bindings, heads, hub, quiet, saving
from .container import container_of
from .interop import adapterhub, adapterhub_export, peft_tasks
from .methods import MethodConfig, get_config
from .models import load_config, load_pretrained
from .pooling import set_pooling


def apply(model: nn.Module, method: str | MethodConfig | dict = "compacter++", *, name: str = attach.DEFAULT_TASK,
          num_labels: int | None = None, **overrides: Any) -> nn.Module:
    if num_labels is not None:  # a classification head of the task's own size (heads.py)
        heads.check_new_head(model, num_labels, get_config(method, **overrides))
    attach.attach_task(model, method, name=name, **overrides)
    if num_labels is not None:
        container = container_of(model)
        try:
            heads.new_head(model, container.task(name), container.base_labels, num_labels)
        except BaseException:
            attach.delete(model, name)  # all or nothing
            raise
    _bind_methods(model)
    return model


def load(model: nn.Module, directory: str | os.PathLike, *, name: str | None = None, strict: bool = False,
         revision: str | None = None, token: str | bool | None = None) -> nn.Module:
    """Attach a saved task to ``model`` as task ``name``: a folder written by compacter.save, a PEFT LoRA or
    (IA)³ folder (as a task of compacter's ``lora`` / ``ia3``), an AdapterHub adapter folder, or a Hub repo id
    holding any of them (downloaded through the Hugging Face cache).

    It becomes the active task; on any error the model is left exactly as it was. A base of the right
    architecture whose sampled weights differ from the ones a compacter folder was saved with gives a
    warning (``strict=True``: an error). Unlike PEFT's
    ``PeftModel.from_pretrained`` (frozen unless ``is_trainable=True``), a loaded task's parameters
    require grad, ready to train further: they are what the task trains and saves. Serving needs no
    freezing: ``model.eval()`` and ``torch.inference_mode()`` build no graph.
    """
    folder = hub.resolve(directory, revision=revision, token=token)
    if peft_tasks.is_peft_folder(folder):
        peft_tasks.load_peft(model, folder, name=name)
    elif adapterhub.is_adapterhub_folder(folder):
        adapterhub.load(model, folder, name=name)
    else:
        saving.load_folder(model, folder, name=name, strict=strict)
    _bind_methods(model)
    return model


apply.__doc__ = attach.attach_task.__doc__ + """
    ``num_labels``: on a sequence classifier, the task gets a new head of its own size (1: a regression),
    whatever the base's; ``config.id2label`` then shows transformers' default names for it, to set as usual.
    """


def _bind_methods(model: nn.Module) -> None:
    bindings.bind(model, load, hub.push_to_hub)


def export(model: nn.Module, directory: str | os.PathLike, *, format: str = "adapterhub", name: str | None = None) -> Path:
    """Write task ``name`` (default: the active one) in another library's format: ``"adapterhub"`` (a folder
    that ``adapters``' ``model.load_adapter`` reads) or ``"peft"`` (a LoRA or (IA)³ task as a folder that
    ``peft.PeftModel.from_pretrained`` reads)."""
    if format == "adapterhub":
        return adapterhub_export.export(model, directory, name=name)
    if format == "peft":
        return peft_tasks.export_peft(model, directory, name=name)
    raise ValueError(f"Unknown export format {format!r}; compacter exports 'adapterhub' and 'peft' (its own folders: "
                     "compacter.save).")


def push_to_hub(model: nn.Module, repo_id: str, **kwargs: Any) -> str:
    """Upload the model's tasks, laid out as ``save_pretrained`` writes them, with their model cards."""
    return hub.push_to_hub(model, repo_id, **kwargs)


def from_pretrained(base_name_or_path: str | os.PathLike, adapter_dir: str | os.PathLike | None = None, *,
                    name: str | None = None, strict: bool = False, revision: str | None = None,
                    token: str | bool | None = None, **from_pretrained_kwargs: Any) -> nn.Module:
    """The base model with a saved task on it: ``compacter.from_pretrained("t5-base", "runs/rte/adapter")``.

    With one argument, it is the adapter folder (or Hub repo id) and the base model is the one recorded
    in it (``base_model_name_or_path``). Other keyword arguments go to the base's ``from_pretrained``
    (``torch_dtype``, ``device_map``, ``quantization_config`` ...). The model class is the one the task
    was trained on (e.g. T5ForConditionalGeneration, BertForSequenceClassification with its label count).
    """
    if adapter_dir is None:
        adapter_dir, base_name_or_path = base_name_or_path, None
    folder = hub.resolve(adapter_dir, revision=revision, token=token)
    return load(base_model_for(folder, base_name_or_path, **from_pretrained_kwargs), folder, name=name, strict=strict)


def base_model_for(adapter_dir: str | os.PathLike, base_name_or_path: str | os.PathLike | None = None,
                   **from_pretrained_kwargs: Any) -> nn.Module:
    """The bare base model a saved task was trained on (its class and label count), not yet carrying the task."""
    adapter_dir = hub.resolve(adapter_dir)
    if adapterhub.is_adapterhub_folder(adapter_dir):
        return adapterhub.base_model_for(adapter_dir, base_name_or_path, **from_pretrained_kwargs)
    description = saving.read_description(adapter_dir)
    path = saving.saved_files(adapter_dir)[0]
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
    supplies_head = any(key.startswith(tuple(f"base.{prefix}" for prefix in quiet.HEAD_PREFIXES))
                        for key in description.get("tensors", {}))
    with quiet.head_reports_hidden() if supplies_head else contextlib.nullcontext():
        model = load_pretrained(model_class, str(base_name_or_path), **from_pretrained_kwargs)
    return set_pooling(model, description["base_model"].get("pooling", "cls"))


def _model_class(class_name: str | None) -> type:
    """transformers' class of that name (only a PreTrainedModel subclass: a file's text picks nothing else)."""
    candidate = getattr(transformers, class_name, None) if isinstance(class_name, str) else None
    if isinstance(candidate, type) and issubclass(candidate, transformers.PreTrainedModel):
        return candidate
    raise ValueError(f"The saved task's base model class {class_name!r} is not a transformers model class; build "
                     "the base model yourself and call compacter.load(model, adapter_dir).")
