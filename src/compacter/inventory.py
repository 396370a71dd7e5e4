"""What a model holds: the base model's own modules and parameters, what each task trains (by group), and the
base model's architecture fingerprint that a saved task must match."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from typing import Any

from torch import nn

from .container import container_of
from .model_anatomy import head_parameter_names, is_norm, model_type, output_layer_parameter_names
from .pooling import pooling_of
from .quantization import logical_numel, logical_shape

GROUPS = ("adapters", "shared", "prompt", "intrinsic", "layer_norms", "biases", "head", "output_layer", "backbone")


def count_unique(parameters) -> int:
    """Number of parameters, each tensor counted once (tied embeddings are one tensor)."""
    seen, total = set(), 0
    for param in parameters:
        if id(param) not in seen:
            seen.add(id(param))
            total += logical_numel(param)
    return total


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
            groups[prefix + param_name] = container.base_copies.overrides[param_name[len("base."):]].group
        else:
            groups[prefix + param_name] = task.config.param_groups.get(param_name.split(".")[0], "adapters")
    if task.config.trains_base_in_place:
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


def architecture_fingerprint(model: nn.Module, heads: dict[str, tuple[int, ...]] | None = None) -> dict[str, Any]:
    """What a saved adapter must match: the model type, its main sizes and every parameter's logical shape.

    It describes the architecture, not how the weights are stored: a base quantized to 8 or 4 bits
    (whose packed weights have other storage shapes) has the fingerprint of the unquantized base.
    ``heads``: shapes of a task's own head (another label count, heads.py) in place of the model's.
    """
    config = getattr(model, "config", None)
    heads = heads or {}
    weights = distinct_weights(model)
    shapes = "\n".join(f"{name}:{tuple(heads[name]) if name in heads else logical_shape(p)}" for name, p in weights)
    summary = {"model_type": model_type(model), "class": type(model).__name__}
    for key in ("d_model", "hidden_size", "num_layers", "num_decoder_layers", "num_hidden_layers",
                "vocab_size", "d_ff", "intermediate_size", "num_heads", "num_attention_heads"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            summary[key] = value
    summary["parameters"] = count_unique(p for _, p in weights) + sum(
        math.prod(shape) - logical_numel(p) for name, p in weights if (shape := heads.get(name)) is not None)
    summary["shapes_sha256"] = hashlib.sha256(shapes.encode()).hexdigest()
    if (pooling := pooling_of(model)) != "cls":  # recorded only where it is not the model's own: older files match
        summary["pooling"] = pooling
    return summary
