"""transformers' own methods on a model with compacter tasks: they act on the tasks, or say what does.

transformers gives every ``PreTrainedModel`` PEFT's adapter methods (``set_adapter``, ``load_adapter``,
``active_adapters`` ...) and ``save_pretrained`` / ``push_to_hub``. On a model carrying compacter tasks
they would either fail inside PEFT ("PEFT is not installed", "No adapter loaded") or, for
``push_to_hub``, upload our files and then overwrite our model card with a blank one. So ``apply`` and
``load`` bind these to the model instance (the class is untouched): each one goes through compacter's
own calls. Once every task is taken off (``compacter.unload``), each falls back to transformers' own.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from torch import nn

from . import attach, saving, switching

BOUND_METHODS = attach.BOUND_METHODS  # what bind() puts on an instance (attach.unload takes them off)
_COMPACTER_METHODS = {"set_adapter", "load_adapter", "active_adapters", "active_adapter", "delete_adapter",
                      "add_adapter", "enable_adapters", "disable_adapters"}


def bind(model: nn.Module, load: Callable[..., nn.Module], push_to_hub: Callable[..., Any]) -> None:
    """Put compacter's versions of transformers' adapter methods, ``save_pretrained`` and ``push_to_hub`` on
    ``model`` (``load`` and ``push_to_hub`` are api's, passed in so that imports run one way)."""
    if not hasattr(model, "save_pretrained"):
        return  # a bare nn.Module: no transformers method to stand in for
    methods: dict[str, Callable[..., Any]] = {
        "save_pretrained": functools.partial(save_pretrained, upload=push_to_hub),
        "push_to_hub": push_to_hub,
        "set_adapter": set_adapter,
        "load_adapter": functools.partial(load_adapter, load=load),
        "active_adapters": active_adapters,
        "active_adapter": active_adapter,
        "delete_adapter": delete_adapter,
        "add_adapter": add_adapter,
        "enable_adapters": enable_adapters,
        "disable_adapters": disable_adapters,
    }
    for method_name, method in methods.items():
        if method_name in _COMPACTER_METHODS or hasattr(type(model), method_name):
            setattr(model, method_name, functools.partial(_while_tasks, method_name, model, method))


def _while_tasks(method_name: str, model: nn.Module, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """compacter's version while the model has tasks; transformers' own once they are all taken off."""
    if switching.tasks(model) or method_name == "load_adapter":
        return method(model, *args, **kwargs)
    own = getattr(type(model), method_name, None)
    if own is None:
        raise ValueError(f"{method_name} acts on compacter tasks and this model has none left; attach one with "
                         "compacter.apply(model, method) or compacter.load(model, folder).")
    return own(model, *args, **kwargs)


def save_pretrained(model: nn.Module, save_directory: str | os.PathLike, *args: Any,
                    upload: Callable[..., Any], **kwargs: Any) -> None:
    """saving.save_pretrained, and with ``push_to_hub=True`` an upload of the same files to ``repo_id``
    (default: the folder's name, as transformers does)."""
    push = kwargs.pop("push_to_hub", False)
    saving.save_pretrained(model, save_directory, *args, **kwargs)
    if push and kwargs.get("is_main_process", True):
        hub_options = {key: kwargs[key] for key in ("private", "token", "commit_message", "revision",
                                                    "selected_adapters") if key in kwargs}
        upload(model, kwargs.get("repo_id") or os.fspath(save_directory).rstrip("/").split("/")[-1], **hub_options)


def set_adapter(model: nn.Module, adapter_name: str | list[str]) -> None:
    """``model.set_adapter("rte")``: compacter.set_active(model, "rte")."""
    names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
    if len(names) != 1:
        raise ValueError(f"set_adapter({adapter_name!r}): a compacter model runs one task at a time; to run a "
                         "different task on each row of a batch use `with compacter.route(model, row_tasks): ...`.")
    switching.set_active(model, names[0])


def load_adapter(model: nn.Module, peft_model_id: str | os.PathLike, adapter_name: str | None = None, *,
                 load: Callable[..., nn.Module], **kwargs: Any) -> None:
    """``model.load_adapter(folder_or_hub_id, adapter_name)``: compacter.load(model, folder, name=adapter_name)."""
    if kwargs.pop("is_trainable", True) is False:
        raise ValueError("load_adapter(is_trainable=False): a compacter task's parameters are what it trains and "
                         "saves, so they are never frozen; to serve, use model.eval() and torch.inference_mode().")
    unknown = sorted(set(kwargs) - {"revision", "token"})
    if unknown:
        raise ValueError(f"load_adapter on a compacter model reads compacter and AdapterHub folders; it has no "
                         f"{', '.join(unknown)} (PEFT's). Call compacter.load(model, folder, name=...).")
    load(model, peft_model_id, name=adapter_name, **kwargs)


def active_adapters(model: nn.Module) -> list[str]:
    """The active task, as a one-element list (none: [])."""
    active = switching.active_task(model)
    return [active] if active is not None else []


def active_adapter(model: nn.Module) -> str | None:
    return switching.active_task(model)


def delete_adapter(model: nn.Module, adapter_names: str | list[str]) -> None:
    for name in [adapter_names] if isinstance(adapter_names, str) else adapter_names:
        attach.delete(model, name)


def add_adapter(model: nn.Module, *args: Any, **kwargs: Any) -> None:
    raise ValueError("add_adapter takes a PEFT config; on a compacter model add a task with "
                     "compacter.apply(model, method, name=...) or compacter.load(model, folder, name=...).")


def enable_adapters(model: nn.Module) -> None:
    raise ValueError("A compacter model's active task always runs; for the base model's own outputs use "
                     "`with compacter.disabled(model): ...` (or compacter.set_active(model, None)).")


def disable_adapters(model: nn.Module) -> None:
    enable_adapters(model)
