"""What kind of model it is and what its modules are: the model family, the model type, norms, linear layers' widths,
a task head's parameters. The one rule each, used by method placement, learning rates, prompts and task formatting."""

from __future__ import annotations

import re
from typing import Any

from torch import nn

FAMILIES = ("seq2seq", "encoder", "decoder")


def model_family(model_or_config: Any) -> str:
    """``seq2seq`` (``is_encoder_decoder``: T5, BART ...), ``decoder`` (a causal-LM architecture or class, or a model
    type that has a causal LM and no masked LM: GPT-2, Llama, ... also as classifiers) or ``encoder`` (BERT-style),
    from a model or its transformers config. The one rule for default learning rates, prompt placement, the Auto
    class and how a task is formatted (text-to-text or a classification head)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    config = getattr(model_or_config, "config", model_or_config)
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    names = list(getattr(config, "architectures", None) or [])
    if isinstance(model_or_config, nn.Module):
        names.append(type(model_or_config).__name__)
    if any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in names) or getattr(config, "is_decoder", False):
        return "decoder"
    kind = getattr(config, "model_type", None)
    if kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "decoder"
    return "encoder"


def model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) or type(model).__name__


def first_block_linears(model: nn.Module) -> list[str]:
    names = [name for name, module in model.named_modules()
             if output_width(module) is not None and name.split(".")[0] != "compacter"]
    with_index = [name for name in names if re.search(r"\.0\.", name)]
    return (with_index or names)[:12]


def output_width(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.out_features
    if type(module).__name__ == "Conv1D":  # GPT-2's transposed linear
        return int(module.nf)
    return None


def input_width(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.in_features
    if type(module).__name__ == "Conv1D":
        return int(module.nx)
    return None


def is_norm(module: nn.Module) -> bool:
    name = type(module).__name__
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or name.endswith(("LayerNorm", "RMSNorm"))


def head_parameter_names(model: nn.Module) -> set[str]:
    """Parameters of a task head that the base model does not have (e.g. BERT's classifier).

    The pretrained output layer (``get_output_embeddings``, e.g. T5's lm_head) is not a head.
    """
    base = getattr(model, "base_model", model)
    if base is model:
        return set()
    base_ids = {id(p) for p in base.parameters()}
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    output_ids = {id(p) for p in output.parameters()} if output is not None else set()
    return {name for name, p in model.named_parameters() if id(p) not in base_ids | output_ids}


def output_layer_parameter_names(model: nn.Module) -> set[str]:
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is None:
        return set()
    ids = {id(p) for p in output.parameters()}
    return {name for name, p in model.named_parameters(remove_duplicate=False) if id(p) in ids}


def linear_widths(module: nn.Module) -> tuple[int, int]:
    """(input width, output width) of a linear layer (nn.Linear and its quantized subclasses, GPT-2's Conv1D)."""
    return input_width(module), output_width(module)
