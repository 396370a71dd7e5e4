"""Where the sublayers of each transformer family are, by module name.

An adapter goes on the output of a sublayer, before the sublayer's dropout and residual add
(SPEC §1). In every family below that output is the output of one linear module (the attention
output projection, the feed-forward output projection), so an architecture is described by two
regular expressions over module names. The block index is the first integer in the name and
the "stack" (encoder or decoder) is the part of the name before it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ArchitectureSpec:
    attention_output: str
    feed_forward_output: str


_T5 = ArchitectureSpec(
    attention_output=r"block\.\d+\.layer\.0\.SelfAttention\.o$",
    feed_forward_output=r"block\.\d+\.layer\.\d+\.DenseReluDense\.wo$",
)
_BERT = ArchitectureSpec(
    attention_output=r"layer\.\d+\.attention\.output\.dense$",
    feed_forward_output=r"layer\.\d+\.output\.dense$",
)
_LLAMA = ArchitectureSpec(
    attention_output=r"layers\.\d+\.self_attn\.o_proj$",
    feed_forward_output=r"layers\.\d+\.mlp\.down_proj$",
)

ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "t5": _T5,
    "mt5": _T5,
    "umt5": _T5,
    "bert": _BERT,
    "roberta": _BERT,
    "xlm-roberta": _BERT,
    "electra": _BERT,
    "distilbert": ArchitectureSpec(
        attention_output=r"transformer\.layer\.\d+\.attention\.out_lin$",
        feed_forward_output=r"transformer\.layer\.\d+\.ffn\.lin2$",
    ),
    "gpt2": ArchitectureSpec(attention_output=r"h\.\d+\.attn\.c_proj$", feed_forward_output=r"h\.\d+\.mlp\.c_proj$"),
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
}

SUBLAYERS = ("attention", "feed_forward")


@dataclass(frozen=True)
class Site:
    """One place an adapter goes: a module whose output is a sublayer's output."""

    name: str
    module: nn.Module
    sublayer: str  # "attention" or "feed_forward"
    stack: str  # e.g. "encoder.block", "decoder.block", "bert.encoder.layer"
    layer: int
    width: int  # the hidden size at this site


def model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) or type(model).__name__


def resolve_spec(model: nn.Module, attention_output: str | None, feed_forward_output: str | None) -> ArchitectureSpec:
    if attention_output and feed_forward_output:
        return ArchitectureSpec(attention_output, feed_forward_output)
    known = ARCHITECTURES.get(model_type(model))
    if known is None:
        raise ValueError(
            f"compacter does not know where the sublayer outputs of a {model_type(model)!r} model are "
            f"(known: {', '.join(sorted(ARCHITECTURES))}). Pass the module names of the attention "
            "output and feed-forward output projections as regular expressions, e.g. "
            "compacter.apply(model, 'compacter', attention_output=r'layers\\.\\d+\\.attn\\.out_proj$', "
            "feed_forward_output=r'layers\\.\\d+\\.mlp\\.fc2$'). Linear modules of this model's first "
            f"block: {_first_block_linears(model)}"
        )
    return ArchitectureSpec(attention_output or known.attention_output,
                            feed_forward_output or known.feed_forward_output)


def _first_block_linears(model: nn.Module) -> list[str]:
    names = [name for name, module in model.named_modules()
             if _output_width(module) is not None and name.split(".")[0] != "compacter"]
    with_index = [name for name in names if re.search(r"\.0\.", name)]
    return (with_index or names)[:12]


def _output_width(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.out_features
    if type(module).__name__ == "Conv1D":  # GPT-2's transposed linear
        return int(module.nf)
    return None


def find_sites(model: nn.Module, spec: ArchitectureSpec, sublayers: tuple[str, ...]) -> list[Site]:
    sites = []
    patterns = {"attention": re.compile(spec.attention_output), "feed_forward": re.compile(spec.feed_forward_output)}
    for name, module in model.named_modules():
        if name.split(".")[0] == "compacter":  # the tasks already attached, not the base model
            continue
        for sublayer in sublayers:
            if not patterns[sublayer].search(name):
                continue
            width = _output_width(module)
            match = re.search(r"\.(\d+)\.", f".{name}.")
            if width is None or match is None:
                raise ValueError(
                    f"The module {name!r} ({type(module).__name__}) matched the {sublayer} pattern but an "
                    "adapter site must be a linear output projection inside a numbered block "
                    "(e.g. 'encoder.layer.3.output.dense'). Make the pattern more specific."
                )
            stack = name[: match.start()].rstrip(".") if match.start() else ""
            sites.append(Site(name, module, sublayer, stack, int(match.group(1)), width))
    if not sites:
        raise ValueError(
            f"No module of this {model_type(model)!r} model matched the sublayer patterns "
            f"{spec.attention_output!r} / {spec.feed_forward_output!r}. Pass attention_output= and "
            f"feed_forward_output= that match module names such as {_first_block_linears(model)}."
        )
    return sites


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
