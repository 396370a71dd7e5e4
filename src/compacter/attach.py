"""Putting tasks on a model and taking them off again; which base parameters each task trains."""

from __future__ import annotations

from typing import Any

from torch import nn

from .base_copies import Override, parameter_holders
from .container import CompacterModules, container_of, refuse_in_place
from .devices import execution_device, is_offloaded, stored_value
from .inventory import architecture_fingerprint, base_modules, base_parameters, count_unique, distinct_weights
from .methods import MethodConfig, get_config
from .methods.base import TaskModules
from .model_anatomy import head_parameter_names, is_norm, output_layer_parameter_names
from .names import check_task_name
from .pooling import MeanPooler
from .quantization import is_quantized

DEFAULT_TASK = "default"
# transformers' methods that api.py binds to a model with tasks (bindings.py); unload takes them off again
BOUND_METHODS = ("save_pretrained", "push_to_hub", "set_adapter", "load_adapter", "active_adapters", "active_adapter",
                 "delete_adapter", "add_adapter", "enable_adapters", "disable_adapters")


def attach_task(model: nn.Module, method: str | MethodConfig | dict = "compacter++", *, name: str = DEFAULT_TASK,
          **overrides: Any) -> nn.Module:
    """Attach ``method`` to ``model`` in place as task ``name``, make it the active task; returns the model.

    ``compacter.apply(model, "compacter++")``, ``compacter.apply(model, "compacter", n=8)`` or
    ``compacter.apply(model, compacter.get_config("adapter", reduction_factor=16))``. The base model
    is frozen; the model then trains, evaluates and generates as before, with the task's modules in
    it. Apply again with another ``name`` to add a task on the same frozen base.
    """
    config = get_config(method, **overrides)
    container = getattr(model, "compacter", None)
    if container is not None and not isinstance(container, CompacterModules):
        raise ValueError("This model has a submodule named 'compacter' that compacter did not attach.")
    _check_new_task(container, name, config)
    if config.trains_base_in_place:
        _check_base_trainable(model, config)
    first = container is None
    restore_point = RestorePoint(model)
    if first:
        fingerprint, base_count = architecture_fingerprint(model), count_unique(p for _, p in distinct_weights(model))
        container = CompacterModules(model, fingerprint, base_count)
        model.requires_grad_(False)
    task = TaskModules(name, config)
    try:
        config.attach(model, task)
        overrides_ = _train_base_parameters(model, task)
        if not any(p.requires_grad for p in task.parameters()) and not any(
                p.requires_grad for _, p in base_parameters(model)):
            raise ValueError(f"The method {config.name!r} leaves nothing to train on this {type(model).__name__}"
                             f"{config.nothing_to_train_hint}.")
    except BaseException:
        task.remove_hooks()
        restore_point.restore()
        raise
    if config.trains_base_in_place:
        container.restore_point = restore_point  # a failed load takes the task off again (rollback)
    if first:
        model.add_module("compacter", container)
        _add_boundaries(model, container)
    container.add_task(task, overrides_)
    container.set_active(name)
    return model


def _check_new_task(container: CompacterModules | None, name: str, config: MethodConfig) -> None:
    check_task_name(name)
    if container is None:
        return
    if name in container.tasks:
        raise ValueError(f"This model already has a task named {name!r} (method "
                         f"{container.tasks[name].config.name!r}). Choose another name=, or remove it first with "
                         f"compacter.delete(model, {name!r}).")
    in_place = [t.config.name for t in container.tasks.values() if t.config.trains_base_in_place]
    if in_place or config.trains_base_in_place:
        method = in_place[0] if in_place else config.name
        raise ValueError(f"The method {method!r} trains the base model's own parameters in place, so it cannot share "
                         "a model with other tasks. Attach it to a fresh copy of the base model.")


def _check_base_trainable(model: nn.Module, config: MethodConfig) -> None:
    """A method that trains the base's own parameters in place needs them whole, in memory and unquantized."""
    quantized = next((name for name, p in base_parameters(model) if is_quantized(p)), None)
    if quantized is not None:
        raise ValueError(f"The method {config.name!r} trains the base model's own parameters in place, and this base "
                         f"is quantized ({quantized} is stored in 8 or 4 bits). Train it on the unquantized base, or "
                         "train adapters on the quantized one (compacter++, compacter, adapter, ...).")
    if is_offloaded(model):
        raise ValueError(f"The method {config.name!r} trains the base model's own parameters in place, and accelerate "
                         "offloads some of them to the CPU or disk between calls. Load the model without offloading "
                         "(a device_map that fits it on its devices), or train adapters (compacter++, ...).")


def _add_boundaries(model: nn.Module, container: CompacterModules) -> None:
    """The model, and the parts of it that generate() (or a user) calls directly."""
    entries = [model]
    for getter in ("get_encoder", "get_decoder"):
        part = getattr(model, getter, None)
        part = part() if callable(part) else None
        if isinstance(part, nn.Module):
            entries.append(part)
    base = getattr(model, "base_model", None)
    if isinstance(base, nn.Module):
        entries.append(base)
    for entry in dict.fromkeys(entries):
        container.add_boundary(entry)


def _train_base_parameters(model: nn.Module, task: TaskModules) -> list[Override]:
    """Mark what the task trains of the base model: layer norms, a new task head, the output layer.

    Methods that train the base in place do it there; every other task gets fp32 copies of these
    parameters of its own (the base's stay frozen and untouched) and an Override says where they go.
    """
    config = task.config
    named = dict(base_parameters(model, remove_duplicate=False))
    targets: dict[str, str] = {}  # name → group
    if config.train_layer_norms:
        for module_name, module in base_modules(model):
            if is_norm(module):
                for attribute, param in module._parameters.items():
                    if param is not None:
                        targets.setdefault(f"{module_name}.{attribute}".lstrip("."), "layer_norms")
    heads = head_parameter_names(model) if config.train_head else set()
    if config.train_pooler:
        heads |= _pooler_parameter_names(model, config)
    outputs = output_layer_parameter_names(model) if config.train_output_layer else set()
    for param_name in named:  # in the model's order (the optimizer's order must not depend on set hashing)
        if param_name in heads:
            targets.setdefault(param_name, "head")
        elif param_name in outputs:
            targets.setdefault(param_name, "output_layer")
    if config.trains_base_in_place:
        for param_name in targets:
            named[param_name].requires_grad_(True)
        return []
    holders = parameter_holders(model)
    first_name = {}
    for param_name, param in named.items():
        first_name.setdefault(id(param), param_name)
    overrides, seen = [], set()
    for param_name, group in targets.items():
        param = named[param_name]
        key = first_name[id(param)]
        if key in seen:
            continue
        seen.add(key)
        bitsandbytes = [type(m).__name__ for m, _ in holders[id(param)] if type(m).__module__.startswith("bitsandbytes")]
        if bitsandbytes:
            raise ValueError(f"The method {config.name!r} trains {key}, which a bitsandbytes {bitsandbytes[0]} holds in "
                             "8 or 4 bits. Keep that module unquantized (transformers: BitsAndBytesConfig("
                             "llm_int8_skip_modules=[...]); compacter.quantize_base never quantizes a head).")
        task.add_base_copy(key, stored_value(model, key), execution_device(model, key.rpartition(".")[0]))
        overrides.append(Override(key, group, tuple(h for h in holders[id(param)] if not _is_ours(model, h[0]))))
    return overrides


def _pooler_parameter_names(model: nn.Module, config: MethodConfig) -> set[str]:
    pooler = getattr(getattr(model, "base_model", model), "pooler", None)
    if config.trains_base_in_place or not isinstance(pooler, nn.Module):
        reason = (f"the method {config.name!r} trains the base in place" if config.trains_base_in_place
                  else f"this {type(model).__name__} has no pooler")
        raise ValueError(f"train_pooler=True gives a task its own copy of the base model's [CLS] pooler, but {reason}. "
                         "Set train_pooler=False.")
    if isinstance(pooler, MeanPooler):
        raise ValueError("train_pooler=True trains the base's [CLS] pooler, and this model mean-pools its tokens "
                         "instead (pooling='mean'), which has nothing to train. Set train_pooler=False.")
    prefix = next(name for name, module in model.named_modules() if module is pooler)
    return {f"{prefix}.{name}" for name, _ in pooler.named_parameters()}


def _restore_requires_grad(model: nn.Module, container: CompacterModules) -> None:
    for param_name, param in model.named_parameters():
        if param_name in container.base_requires_grad:
            param.requires_grad_(container.base_requires_grad[param_name])


class RestorePoint:
    """The structure of a model (which parameters each module holds, its attributes, what trains), to undo an
    attach that failed half-way. Values are not kept: nothing changes a value before an attach succeeded."""

    def __init__(self, model: nn.Module) -> None:
        self.parameters = {module: dict(module._parameters) for module in model.modules()}
        self.attributes = {module: set(module.__dict__) for module in model.modules()}
        self.requires_grad = [(p, p.requires_grad) for p in model.parameters()]

    def restore(self) -> None:
        for module, parameters in self.parameters.items():
            module._parameters.clear()
            module._parameters.update(parameters)
        for module, attributes in self.attributes.items():
            for attribute in set(module.__dict__) - attributes:
                del module.__dict__[attribute]
        for param, flag in self.requires_grad:
            param.requires_grad_(flag)


def rollback(model: nn.Module) -> None:
    """Take off a task that trains the base in place, right after it was attached (its load failed)."""
    container = container_of(model)
    container.remove_all_hooks()
    del model._modules["compacter"]
    container.restore_point.restore()


def delete(model: nn.Module, name: str) -> None:
    """Take task ``name`` off the model (the last task: the model is the base model again)."""
    container = container_of(model)
    container.task(check_task_name(name, "delete(): the task name"))
    if container.routing is not None and name in container.routing.tasks:
        raise ValueError(f"Task {name!r} is routed by the compacter.route() block this call is in; delete it after "
                         "the block.")
    refuse_in_place(container, "be deleted")
    if len(container.tasks) == 1:
        unload(model)
    else:
        container.remove_task(name)


def unload(model: nn.Module) -> nn.Module:
    """Take every task off and return the base model, exactly as it was (its ``state_dict`` bit-identical)."""
    container = container_of(model)
    refuse_in_place(container, "be unloaded")
    container.set_active(None)  # the base's own labels shown again (heads.py)
    container.remove_all_hooks()
    del model._modules["compacter"]
    _restore_requires_grad(model, container)
    for module in model.modules():
        module.__dict__.pop("_compacter_saved", None)
    for method in BOUND_METHODS:  # compacter's versions, bound to the instance: transformers' own answer again
        model.__dict__.pop(method, None)
    return model


def _is_ours(model: nn.Module, module: nn.Module) -> bool:
    container = getattr(model, "compacter", None)
    return isinstance(container, CompacterModules) and any(module is m for m in container.modules())
