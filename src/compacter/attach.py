"""Attaching a method to a model: the one public call, freezing, and what trains where."""

from __future__ import annotations

import hashlib
from typing import Any

from torch import nn

from .architectures import head_parameter_names, is_norm, model_type, output_layer_parameter_names
from .methods import CompacterModules, MethodConfig, get_config

GROUPS = ("adapters", "shared", "prompt", "intrinsic", "layer_norms", "biases", "head", "output_layer", "backbone")


def apply(model: nn.Module, method: str | MethodConfig | dict = "compacter", **overrides: Any) -> nn.Module:
    """Attach ``method`` to ``model`` in place and freeze all it does not train; returns the model.

    ``compacter.apply(model, "compacter++")``, ``compacter.apply(model, "compacter", n=8)`` or
    ``compacter.apply(model, compacter.get_config("adapter", reduction_factor=16))``.
    The model then trains, evaluates and generates as before, with the method's modules in it.
    """
    if isinstance(getattr(model, "compacter", None), CompacterModules):
        raise ValueError(f"This model already has the method {model.compacter.config.name!r} attached. "
                         "Load a fresh copy of the base model to attach another.")
    config = get_config(method, **overrides)
    fingerprint = architecture_fingerprint(model)
    base_count = count_unique(model.parameters())
    model.requires_grad_(False)
    modules = CompacterModules()
    modules.config = config
    modules.fingerprint = fingerprint
    modules.base_parameter_count = base_count
    config.attach(model, modules)
    if config.train_layer_norms:
        for module in model.modules():
            if is_norm(module):
                module.requires_grad_(True)
    named = dict(model.named_parameters(remove_duplicate=False))
    if config.train_head:
        for name in head_parameter_names(model):
            named[name].requires_grad_(True)
    if config.train_output_layer:
        for name in output_layer_parameter_names(model):
            named[name].requires_grad_(True)
    if not any(p.requires_grad for p in model.parameters()) and not any(p.requires_grad for p in modules.parameters()):
        raise ValueError(f"The method {config.name!r} leaves nothing to train on this {type(model).__name__}"
                         + (" (it trains only a new task head, and this model has none)." if config.kind == "linear-probe"
                            else "."))
    model.add_module("compacter", modules)
    # Banks build their weights once per forward of the model; this tells them a new one began.
    modules.start_hook = model.register_forward_pre_hook(start_forward)
    return model


def start_forward(model: nn.Module, args: tuple) -> None:
    """The model's forward pre-hook: tell its method's modules that a new forward pass began."""
    model.compacter.start_forward()
    # Adapters of a module that runs at several layer positions (ALBERT) count its calls; they live
    # on the model's modules, outside model.compacter, so they are reset here.
    for adapter in getattr(model.compacter, "counted_adapters", ()):
        adapter.start_forward()


def attached_config(model: nn.Module) -> MethodConfig:
    modules = getattr(model, "compacter", None)
    if not isinstance(modules, CompacterModules):
        raise ValueError("This model has no compacter method attached; call compacter.apply(model, method) first.")
    return modules.config


def count_unique(parameters) -> int:
    """Number of parameters, each tensor counted once (tied embeddings are one tensor)."""
    seen, total = set(), 0
    for param in parameters:
        if id(param) not in seen:
            seen.add(id(param))
            total += param.numel()
    return total


def parameter_groups(model: nn.Module) -> dict[str, str]:
    """Which of GROUPS each trainable parameter of an attached model belongs to, by name."""
    heads, outputs = head_parameter_names(model), output_layer_parameter_names(model)
    norm_params = {id(p) for module in model.modules() if is_norm(module) for p in module.parameters(recurse=False)}
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("compacter."):
            part = name.split(".")[1]
            groups[name] = part if part in ("shared", "prompt", "intrinsic") else "adapters"
        elif name in heads:
            groups[name] = "head"
        elif name in outputs:
            groups[name] = "output_layer"
        elif id(param) in norm_params:
            groups[name] = "layer_norms"
        elif name.endswith("bias"):
            groups[name] = "biases"
        else:
            groups[name] = "backbone"
    return groups


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every parameter that trains, by name, each tensor once."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def architecture_fingerprint(model: nn.Module) -> dict[str, Any]:
    """What a saved adapter must match: the model type, its main sizes and every parameter's shape."""
    config = getattr(model, "config", None)
    shapes = "\n".join(f"{name}:{tuple(p.shape)}" for name, p in model.named_parameters())
    summary = {"model_type": model_type(model), "class": type(model).__name__}
    for key in ("d_model", "hidden_size", "num_layers", "num_decoder_layers", "num_hidden_layers",
                "vocab_size", "d_ff", "intermediate_size", "num_heads", "num_attention_heads"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            summary[key] = value
    summary["parameters"] = count_unique(model.parameters())
    summary["shapes_sha256"] = hashlib.sha256(shapes.encode()).hexdigest()
    return summary
