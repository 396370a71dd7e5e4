"""Attaching tasks to a model, switching between them, and taking them off again; what trains where."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from .architectures import head_parameter_names, is_norm, model_type, output_layer_parameter_names
from .container import CompacterModules, Override, Routing, parameter_holders
from .devices import execution_device, is_offloaded, stored_value
from .methods import MethodConfig, get_config
from .methods.base import TaskModules
from .methods.prompt import Prompt
from .names import check_task_name
from .quantization import is_quantized, logical_numel, logical_shape

GROUPS = ("adapters", "shared", "prompt", "intrinsic", "layer_norms", "biases", "head", "output_layer", "backbone")
DEFAULT_TASK = "default"
ROUTABLE_HOLDERS = (nn.Linear, nn.LayerNorm, nn.RMSNorm)


def apply(model: nn.Module, method: str | MethodConfig | dict = "compacter", *, name: str = DEFAULT_TASK,
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
    if config.in_base:
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
                             + (" (it trains only a new task head, and this model has none)."
                                if config.kind == "linear-probe" else "."))
    except BaseException:
        task.remove_hooks()
        restore_point.restore()
        raise
    if config.in_base:
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
    in_base = [t.config.name for t in container.tasks.values() if t.config.in_base]
    if in_base or config.in_base:
        method = in_base[0] if in_base else config.name
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
    outputs = output_layer_parameter_names(model) if config.train_output_layer else set()
    for param_name in named:  # in the model's order (the optimizer's order must not depend on set hashing)
        if param_name in heads:
            targets.setdefault(param_name, "head")
        elif param_name in outputs:
            targets.setdefault(param_name, "output_layer")
    if config.in_base:
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


def container_of(model: nn.Module) -> CompacterModules:
    modules = getattr(model, "compacter", None)
    if not isinstance(modules, CompacterModules):
        raise ValueError("This model has no compacter method attached; call compacter.apply(model, method) first.")
    return modules


def attached_config(model: nn.Module, name: str | None = None) -> MethodConfig:
    """The method config of task ``name`` (default: the active task)."""
    return container_of(model).task(name).config


def tasks(model: nn.Module) -> list[str]:
    """The names of the tasks attached to ``model``, in the order they were attached."""
    modules = getattr(model, "compacter", None)
    return list(modules.tasks) if isinstance(modules, CompacterModules) else []


def active_task(model: nn.Module) -> str | None:
    return container_of(model).active


def set_active(model: nn.Module, name: str | None) -> None:
    """Make task ``name`` the one the model runs (None: none, the base model)."""
    container = container_of(model)
    if name is not None:
        check_task_name(name, "set_active(): the task name")
    if container.routing is not None:
        raise ValueError("set_active() inside compacter.route(): the route says each row's task, and leaving it would "
                         "undo the change. Call set_active() after the `with compacter.route(...)` block.")
    container.set_active(name)


@contextlib.contextmanager
def disabled(model: nn.Module) -> Iterator[nn.Module]:
    """``with compacter.disabled(model):`` the base model's own outputs, no task applied."""
    container = container_of(model)
    _refuse_in_base(container, "be disabled")
    with container.switched(enabled=False):
        yield model


@contextlib.contextmanager
def route(model: nn.Module, row_tasks: Sequence[str]) -> Iterator[nn.Module]:
    """``with compacter.route(model, ["rte", "mrpc", ...]):`` row i of every batch runs task ``row_tasks[i]``.

    Forward passes, losses and their gradients (each row's reaches only its own task's parameters)
    and ``generate`` (beam search and ``num_return_sequences`` included) all follow the routing.
    """
    container = container_of(model)
    _refuse_in_base(container, "be routed per row")
    if isinstance(row_tasks, str) or not isinstance(row_tasks, Sequence) or not row_tasks:
        raise ValueError("route() takes one task name per row of the batch, e.g. ['rte', 'mrpc', 'rte'].")
    for name in row_tasks:
        container.task(check_task_name(name, "route(): each row's task name"))
    distinct = tuple(dict.fromkeys(row_tasks))
    for name in distinct:
        reason = unroutable_reason(model, name)
        if reason:
            raise ValueError(f"{reason} Run its rows in a batch of their own.")
    index = {name: i for i, name in enumerate(distinct)}
    device = next(container.parameters(), torch.empty(0)).device
    routing = Routing(distinct, torch.tensor([index[name] for name in row_tasks], device=device))
    generate = model.__dict__.get("generate")
    if hasattr(model, "generate"):
        model.generate = _routed_generate(model, routing)
    try:
        with container.switched(routing=routing):
            yield model
    finally:
        if generate is None:
            model.__dict__.pop("generate", None)
        else:
            model.generate = generate


def unroutable_reason(model: nn.Module, name: str) -> str | None:
    """Why task ``name`` cannot share a batch with other tasks (None: it can)."""
    container = container_of(model)
    task = container.task(name)
    if task.config.in_base:
        return f"Task {name!r} ({task.config.name}) trains the base model's own parameters in place."
    if any(isinstance(m, Prompt) for m in task.modules()):
        return f"Task {name!r} is a prompt-tuning task: its prompt changes the length of the input."
    for key in task.base_copies:
        unroutable = [type(m).__name__ for m, _ in container._overrides[key].holders
                      if not isinstance(m, ROUTABLE_HOLDERS) and not is_norm(m)]
        if unroutable:
            return f"Task {name!r} trains {key} (held by a {unroutable[0]}), which cannot differ from row to row."
    return None


def _routed_generate(model: nn.Module, routing: Routing):
    """generate() repeats each routed row for its beams and returned sequences: allowed only inside it."""
    generate = model.generate

    def routed(*args, **kwargs):
        routing.check_batch(args, {**kwargs, "input_ids": kwargs.get("input_ids", kwargs.get("inputs"))})
        routing.generating = True
        try:
            return generate(*args, **kwargs)
        finally:
            routing.generating = False
    return routed


def delete(model: nn.Module, name: str) -> None:
    """Take task ``name`` off the model (the last task: the model is the base model again)."""
    container = container_of(model)
    container.task(check_task_name(name, "delete(): the task name"))
    if container.routing is not None and name in container.routing.tasks:
        raise ValueError(f"Task {name!r} is routed by the compacter.route() block this call is in; delete it after "
                         "the block.")
    _refuse_in_base(container, "be deleted")
    if len(container.tasks) == 1:
        unload(model)
    else:
        container.remove_task(name)


def unload(model: nn.Module) -> nn.Module:
    """Take every task off and return the base model, exactly as it was (its ``state_dict`` bit-identical)."""
    container = container_of(model)
    _refuse_in_base(container, "be unloaded")
    container.remove_all_hooks()
    del model._modules["compacter"]
    _restore_requires_grad(model, container)
    for module in model.modules():
        module.__dict__.pop("_compacter_saved", None)
    model.__dict__.pop("save_pretrained", None)  # the adapter-only one compacter bound to the instance
    return model


def _refuse_in_base(container: CompacterModules, action: str) -> None:
    for task in container.tasks.values():
        if task.config.in_base:
            raise ValueError(f"Task {task.name!r} ({task.config.name}) trains the base model's own parameters in "
                             f"place, so it cannot {action}: reload the base model instead.")


def count_unique(parameters) -> int:
    """Number of parameters, each tensor counted once (tied embeddings are one tensor)."""
    seen, total = set(), 0
    for param in parameters:
        if id(param) not in seen:
            seen.add(id(param))
            total += logical_numel(param)
    return total


def _is_ours(model: nn.Module, module: nn.Module) -> bool:
    container = getattr(model, "compacter", None)
    return isinstance(container, CompacterModules) and any(module is m for m in container.modules())


def base_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The base model's modules, without compacter's."""
    for module_name, module in model.named_modules():
        if module_name != "compacter" and not module_name.startswith("compacter."):
            yield module_name, module


def base_parameters(model: nn.Module, remove_duplicate: bool = True) -> Iterator[tuple[str, nn.Parameter]]:
    """The base model's parameters by name, without compacter's."""
    for param_name, param in model.named_parameters(remove_duplicate=remove_duplicate):
        if not param_name.startswith("compacter."):
            yield param_name, param


def distinct_weights(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The base model's weights, each once: tied ones too, when offloading split them into several tensors.

    accelerate's ``cpu_offload`` / ``disk_offload`` give each module its own meta parameter, so the
    tied embeddings and output layer of T5 or GPT-2 are no longer one tensor; transformers still
    names the ties (``all_tied_weights_keys``: tied name → the name it is tied to).
    """
    named = list(base_parameters(model))
    present = {name for name, _ in named}
    tied = getattr(model, "all_tied_weights_keys", None)
    tied = tied if isinstance(tied, dict) else {}
    return [(name, p) for name, p in named if not (name in tied and tied[name] in present)]


def parameter_groups(model: nn.Module, name: str | None = None) -> dict[str, str]:
    """Which of GROUPS each parameter task ``name`` (default: active) trains belongs to, by model name."""
    container = container_of(model)
    task = container.task(name)
    prefix = f"compacter.tasks.{task.name}."
    groups = {}
    for param_name, param in task.named_parameters():
        if not param.requires_grad:
            continue
        if param_name.startswith("base."):
            groups[prefix + param_name] = container._overrides[param_name[len("base."):]].group
        else:
            part = param_name.split(".")[0]
            groups[prefix + param_name] = part if part in ("shared", "prompt", "intrinsic") else "adapters"
    if task.config.in_base:
        heads, outputs = head_parameter_names(model), output_layer_parameter_names(model)
        norm_params = {id(p) for _, module in base_modules(model) if is_norm(module)
                       for p in module.parameters(recurse=False)}
        for param_name, param in base_parameters(model):
            if not param.requires_grad:
                continue
            if param_name in heads:
                groups[param_name] = "head"
            elif param_name in outputs:
                groups[param_name] = "output_layer"
            elif id(param) in norm_params:
                groups[param_name] = "layer_norms"
            elif param_name.endswith("bias"):
                groups[param_name] = "biases"
            else:
                groups[param_name] = "backbone"
    return groups


def trainable_parameters(model: nn.Module, name: str | None = None) -> dict[str, nn.Parameter]:
    """Every parameter task ``name`` (default: the active task) trains, by model name, each tensor once."""
    named = dict(model.named_parameters())
    return {param_name: named[param_name] for param_name in parameter_groups(model, name)}


def architecture_fingerprint(model: nn.Module) -> dict[str, Any]:
    """What a saved adapter must match: the model type, its main sizes and every parameter's logical shape.

    It describes the architecture, not how the weights are stored: a base quantized to 8 or 4 bits
    (whose packed weights have other storage shapes) has the fingerprint of the unquantized base.
    """
    config = getattr(model, "config", None)
    shapes = "\n".join(f"{name}:{logical_shape(p)}" for name, p in distinct_weights(model))
    summary = {"model_type": model_type(model), "class": type(model).__name__}
    for key in ("d_model", "hidden_size", "num_layers", "num_decoder_layers", "num_hidden_layers",
                "vocab_size", "d_ff", "intermediate_size", "num_heads", "num_attention_heads"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            summary[key] = value
    summary["parameters"] = count_unique(p for _, p in distinct_weights(model))
    summary["shapes_sha256"] = hashlib.sha256(shapes.encode()).hexdigest()
    return summary
