"""Where the sublayers of each transformer family are, by module name.

An adapter goes on the output of a sublayer, before the sublayer's dropout and residual add
(SPEC §1): after the self-attention and after the feed-forward sublayer of every block, encoder
and decoder, never after cross-attention (SPEC §2). A family is described by two regular
expressions over module names, one for the module whose output is the attention sublayer's
output and one for the feed-forward's. That module is usually a linear output projection
(``o_proj``, ``fc2``, ...); in a mixture-of-experts decoder it is the whole MoE block, whose output
is the weighted sum of its experts' outputs. The block index is the first integer in the name and
the "stack" (encoder or decoder) is the part of the name before it.

The table is keyed by ``config.model_type``; its patterns match the module names of transformers
4.57 and 5.x alike. A model that is not in the table gets its sites inferred from its module
tree (:func:`infer_spec`): what was chosen is printed, and the user can override either pattern.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ArchitectureSpec:
    attention_output: str
    feed_forward_output: str
    # For a block whose modules run at several layer positions (ALBERT shares one block's weights
    # across all layers): the model config and the block's index → the layer positions it runs at.
    layer_positions: Callable[[Any, int], range] | None = None


def _albert_layer_positions(config: Any, group: int) -> range:
    """ALBERT runs layer group ``int(i / (L / G))`` at layer position i (``AlbertTransformer.forward``)."""
    layers, groups = config.num_hidden_layers, config.num_hidden_groups
    positions = [i for i in range(layers) if int(i / (layers / groups)) == group]
    return range(positions[0], positions[-1] + 1) if positions else range(0)


_T5 = ArchitectureSpec(
    attention_output=r"block\.\d+\.layer\.0\.SelfAttention\.o$",
    feed_forward_output=r"block\.\d+\.layer\.\d+\.DenseReluDense\.wo$",
)
_BERT = ArchitectureSpec(  # also DeBERTa (v1, v2, v3)
    attention_output=r"layer\.\d+\.attention\.output\.dense$",
    feed_forward_output=r"layer\.\d+\.output\.dense$",
)
_BART = ArchitectureSpec(  # also OPT; `layers.N.encoder_attn` (cross-attention) gets no adapter
    attention_output=r"layers\.\d+\.self_attn\.out_proj$",
    feed_forward_output=r"layers\.\d+\.fc2$",
)
_LLAMA = ArchitectureSpec(
    attention_output=r"layers\.\d+\.self_attn\.o_proj$",
    feed_forward_output=r"layers\.\d+\.mlp\.down_proj$",
)
_MIXTURE_OF_EXPERTS = ArchitectureSpec(
    attention_output=r"layers\.\d+\.self_attn\.o_proj$",
    # The MoE block (dense MLP in the layers that have none); transformers 4.57 names Mixtral's `block_sparse_moe`.
    feed_forward_output=r"layers\.\d+\.(?:mlp|block_sparse_moe)$",
)

ARCHITECTURES: dict[str, ArchitectureSpec] = {
    # encoder-decoders
    "t5": _T5,
    "mt5": _T5,
    "umt5": _T5,
    "bart": _BART,
    "mbart": _BART,
    "marian": _BART,
    "pegasus": _BART,
    # encoders
    "bert": _BERT,
    "roberta": _BERT,
    "xlm-roberta": _BERT,
    "electra": _BERT,
    "deberta": _BERT,
    "deberta-v2": _BERT,
    "distilbert": ArchitectureSpec(
        attention_output=r"transformer\.layer\.\d+\.attention\.out_lin$",
        feed_forward_output=r"transformer\.layer\.\d+\.ffn\.lin2$",
    ),
    "albert": ArchitectureSpec(
        attention_output=r"albert_layers\.\d+\.attention\.dense$",
        feed_forward_output=r"albert_layers\.\d+\.ffn_output$",
        layer_positions=_albert_layer_positions,
    ),
    "modernbert": ArchitectureSpec(attention_output=r"layers\.\d+\.attn\.Wo$", feed_forward_output=r"layers\.\d+\.mlp\.Wo$"),
    # decoders
    "gpt2": ArchitectureSpec(attention_output=r"h\.\d+\.attn\.c_proj$", feed_forward_output=r"h\.\d+\.mlp\.c_proj$"),
    "opt": _BART,
    "gpt_neox": ArchitectureSpec(
        attention_output=r"layers\.\d+\.attention\.dense$",
        feed_forward_output=r"layers\.\d+\.mlp\.dense_4h_to_h$",
    ),
    "falcon": ArchitectureSpec(
        attention_output=r"h\.\d+\.self_attention\.dense$",
        feed_forward_output=r"h\.\d+\.mlp\.dense_4h_to_h$",
    ),
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "phi3": _LLAMA,
    "gemma": _LLAMA,
    "gemma2": _LLAMA,
    "gemma3_text": _LLAMA,
    "gemma3": _LLAMA,  # the language model of Gemma 3 with vision; the vision tower's blocks name theirs out_proj/fc2
    # mixture-of-experts decoders
    "mixtral": _MIXTURE_OF_EXPERTS,
    "qwen2_moe": _MIXTURE_OF_EXPERTS,
    "qwen3_moe": _MIXTURE_OF_EXPERTS,
}

SUBLAYERS = ("attention", "feed_forward")


@dataclass(frozen=True)
class Site:
    """One place an adapter goes: a module whose output is a sublayer's output."""

    name: str
    module: nn.Module
    sublayer: str  # "attention" or "feed_forward"
    stack: str  # e.g. "encoder.block", "decoder.block", "bert.encoder.layer"
    layer: int  # the layer position of the module's first call in a forward pass
    width: int  # the hidden size at this site
    calls: int = 1  # how many times the module runs in one forward pass, at positions layer, layer + 1, ...

    @property
    def layers(self) -> range:
        """The layer positions this site serves, one per call."""
        return range(self.layer, self.layer + self.calls)


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


def resolve_spec(model: nn.Module, attention_output: str | None, feed_forward_output: str | None) -> ArchitectureSpec:
    """The family's spec from the table, else inferred from the module tree; either pattern given overrides it."""
    known = ARCHITECTURES.get(model_type(model))
    if known is None and attention_output and feed_forward_output:
        return ArchitectureSpec(attention_output, feed_forward_output)
    if known is None:
        known = infer_spec(model)
    if known is None:
        raise ValueError(
            f"compacter does not know where the sublayer outputs of a {model_type(model)!r} model are "
            f"(known: {', '.join(sorted(ARCHITECTURES))}), and could not find them in its module tree. "
            "Pass the module names of the attention output and feed-forward output projections as regular "
            "expressions, e.g. compacter.apply(model, 'compacter', attention_output=r'layers\\.\\d+\\.attn\\.out_proj$', "
            "feed_forward_output=r'layers\\.\\d+\\.mlp\\.fc2$'). Linear modules of this model's first "
            f"block: {_first_block_linears(model)}"
        )
    return dataclasses.replace(known, attention_output=attention_output or known.attention_output,
                               feed_forward_output=feed_forward_output or known.feed_forward_output)


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


def _input_width(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.in_features
    if type(module).__name__ == "Conv1D":
        return int(module.nx)
    return None


def _config_hidden_size(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    size = getattr(config, "hidden_size", None)
    return size if isinstance(size, int) else None


def find_sites(model: nn.Module, spec: ArchitectureSpec, sublayers: tuple[str, ...]) -> list[Site]:
    sites = []
    patterns = {"attention": re.compile(spec.attention_output), "feed_forward": re.compile(spec.feed_forward_output)}
    for name, module in model.named_modules():
        if name.split(".")[0] == "compacter":  # the tasks already attached, not the base model
            continue
        for sublayer in sublayers:
            if not patterns[sublayer].search(name):
                continue
            match = re.search(r"\.(\d+)\.", f".{name}.")
            if match is None:
                raise ValueError(
                    f"The module {name!r} ({type(module).__name__}) matched the {sublayer} pattern but an "
                    "adapter site must be inside a numbered block (e.g. 'encoder.layer.3.output.dense'). "
                    "Make the pattern more specific."
                )
            stack = name[: match.start()].rstrip(".") if match.start() else ""
            block = int(match.group(1))
            positions = spec.layer_positions(model.config, block) if spec.layer_positions else range(block, block + 1)
            if positions:
                sites.append(Site(name, module, sublayer, stack, positions.start, _site_width(model, name, module),
                                  len(positions)))
    if not sites:
        raise ValueError(
            f"No module of this {model_type(model)!r} model matched the sublayer patterns "
            f"{spec.attention_output!r} / {spec.feed_forward_output!r}. Pass attention_output= and "
            f"feed_forward_output= that match module names such as {_first_block_linears(model)}."
        )
    _check_no_site_inside_another(sites)
    return sites


def _site_width(model: nn.Module, name: str, module: nn.Module) -> int:
    width = _output_width(module) or _config_hidden_size(model)
    if width is None:
        raise ValueError(
            f"The module {name!r} ({type(module).__name__}) is not a linear layer, so the width of its output is "
            "taken from the model config's hidden_size, which this model does not have. Make the pattern match "
            "the sublayer's linear output projection instead."
        )
    return width


def _check_no_site_inside_another(sites: list[Site]) -> None:
    """An adapter on a module and another on a module inside it would adapt the same output twice."""
    names = sorted(site.name for site in sites)
    for outer, inner in zip(names, names[1:]):
        if inner == outer or inner.startswith(outer + "."):
            raise ValueError(
                f"The sublayer patterns match both {outer!r} and {inner!r}"
                + (" (as attention and as feed-forward output)" if inner == outer else ", which is inside it")
                + ". Each pattern must match only the module whose output is the sublayer's output: end it with "
                "'$' and name the module in full."
            )


# --- Inference, for a model not in the table ---------------------------------------------------

# A module whose (last) name says it is an attention, a cross-attention, a feed-forward container,
# or an attention's input projection (q, k, v, fused qkv), in the spellings of the HF families.
_ATTENTION_NAME = re.compile(r"attn|attention", re.IGNORECASE)
_CROSS_ATTENTION_NAME = re.compile(r"cross|encdec|enc_dec|encoder_attn", re.IGNORECASE)
_FEED_FORWARD_NAME = re.compile(r"mlp|ffn|feed_?forward|densereludense|moe", re.IGNORECASE)
_INPUT_PROJECTION_NAME = re.compile(
    r"(?:w?(?:q|k|v|qk|kv|qkv)|query|key|value|query_key_value|c_attn|in_proj)(?:_proj|_lin)?", re.IGNORECASE)


def infer_spec(model: nn.Module) -> ArchitectureSpec | None:
    """Find each block's attention-output and feed-forward-output modules in the module tree.

    The blocks are the items of the outermost lists of like modules (``encoder.layers``,
    ``decoder.layers``, ``transformer.h``, ...). In a block, the attention is the outermost
    module named like one (``self_attn``, ``attention``, ...; cross-attention excluded) that holds
    q/k/v projections; its output is the last other linear of it that maps back to the width the
    q/k/v projections read. The feed-forward output is the last such linear of the block's MLP
    (``mlp``, ``ffn``, ...) or, without one, of the block outside its attentions; an MLP that
    holds experts is itself the site. Returns None when no block fits; warns what it chose.
    """
    found: dict[str, dict[tuple[str, str], list[int]]] = {"attention": {}, "feed_forward": {}}
    for list_name, blocks in _block_lists(model):
        for index, block in enumerate(blocks):
            sites = _block_sites(block)
            if sites is None:
                continue
            for sublayer, relative in zip(SUBLAYERS, sites):
                found[sublayer].setdefault((list_name, relative), []).append(index)
    if not found["attention"]:
        return None
    block_counts = {name: len(blocks) for name, blocks in _block_lists(model)}
    spec = ArchitectureSpec(*(_names_pattern(found[sublayer], block_counts) for sublayer in SUBLAYERS))
    examples = [f"{name}.{indices[0]}.{relative}" for sublayer in SUBLAYERS
                for (name, relative), indices in list(found[sublayer].items())[:1]]
    warnings.warn(
        f"compacter: inferred adapter sites for a {model_type(model)!r} model, e.g. {examples[0]!r} and "
        f"{examples[1]!r}: attention_output=r'{spec.attention_output}', feed_forward_output="
        f"r'{spec.feed_forward_output}'. Pass attention_output= / feed_forward_output= to choose others.",
        stacklevel=2,
    )
    return spec


def _block_lists(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """The outermost ModuleLists whose items are all of one class (the blocks of each stack)."""
    lists: list[tuple[str, nn.ModuleList]] = []
    for name, module in model.named_modules():
        if name.split(".")[0] == "compacter" or any(name.startswith(outer + ".") for outer, _ in lists):
            continue
        if isinstance(module, nn.ModuleList) and len(module) and len({type(item) for item in module}) == 1:
            lists.append((name, module))
    return lists


def _block_sites(block: nn.Module) -> tuple[str, str] | None:
    """The names, inside ``block``, of its attention-output and feed-forward-output modules."""
    modules = dict(block.named_modules())
    cross = [name for name in modules if name and _CROSS_ATTENTION_NAME.search(_leaf(name))]
    attentions = _outermost([name for name, module in modules.items()
                             if name and _output_width(module) is None and _ATTENTION_NAME.search(_leaf(name))
                             and not _inside(name, cross) and _input_projections(name, modules)])
    if len(attentions) != 1:
        return None
    attention = attentions[0]
    width = _input_width(modules[_input_projections(attention, modules)[0]])  # the block's hidden size
    attention_outputs = [name for name in _linears_inside(attention, modules, width)
                         if not _INPUT_PROJECTION_NAME.fullmatch(_leaf(name))]
    feed_forward_output = _feed_forward_output(modules, cross + [attention], width)
    if not attention_outputs or feed_forward_output is None:
        return None
    return attention_outputs[-1], feed_forward_output


def _feed_forward_output(modules: dict[str, nn.Module], attentions: list[str], width: int) -> str | None:
    mlps = _outermost([name for name, module in modules.items()
                       if name and _output_width(module) is None and _FEED_FORWARD_NAME.search(_leaf(name))
                       and not _inside(name, attentions)
                       and (_linears_inside(name, modules, None) or _holds_experts(name, modules))])
    if len(mlps) > 1:
        return None
    if mlps and _holds_experts(mlps[0], modules):
        return mlps[0]  # a mixture of experts: its output, not one expert's, is the sublayer's
    if mlps:
        candidates = _linears_inside(mlps[0], modules, width)
    else:  # the feed-forward's linears sit in the block itself (BART's fc2, BERT's output.dense)
        candidates = [name for name in _linears_inside("", modules, width) if not _inside(name, attentions)]
    return candidates[-1] if candidates else None


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _outermost(names: list[str]) -> list[str]:
    return [name for name in names if not _inside(name, [other for other in names if other != name])]


def _inside(name: str, containers: list[str]) -> bool:
    return any(name == c or name.startswith(c + ".") for c in containers)


def _input_projections(container: str, modules: dict[str, nn.Module]) -> list[str]:
    return [name for name, module in modules.items() if _inside(name, [container]) and name != container
            and _output_width(module) is not None and _INPUT_PROJECTION_NAME.fullmatch(_leaf(name))]


def _linears_inside(container: str, modules: dict[str, nn.Module], width: int | None) -> list[str]:
    """Linear modules inside ``container`` ("" = the block) that output ``width`` (any width when None)."""
    return [name for name, module in modules.items() if (not container or _inside(name, [container]))
            and _output_width(module) is not None and (width is None or _output_width(module) == width)]


def _holds_experts(container: str, modules: dict[str, nn.Module]) -> bool:
    return any(_leaf(name) == "experts" for name in modules if _inside(name, [container]) and name != container)


def _names_pattern(found: dict[tuple[str, str], list[int]], block_counts: dict[str, int]) -> str:
    """One regex for the given (block list, name inside the block) pairs; ``\\d+`` where every block has it."""
    lists_by_name: dict[tuple[str, str], list[str]] = {}
    for (list_name, relative), indices in found.items():
        index = r"\d+" if len(indices) == block_counts[list_name] else "(?:" + "|".join(map(str, indices)) + ")"
        lists_by_name.setdefault((index, relative), []).append(re.escape(list_name))
    alternatives = [(lists[0] if len(lists) == 1 else "(?:" + "|".join(lists) + ")") + rf"\.{index}\.{re.escape(relative)}"
                    for (index, relative), lists in lists_by_name.items()]
    return f"^{alternatives[0]}$" if len(alternatives) == 1 else "^(?:" + "|".join(alternatives) + ")$"


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


# --- Target modules by name, as PEFT names them (LoRA, (IA)³) -------------------------------------------------------

def find_targets(model: nn.Module, names: list[str] | None, pattern: str | None, defaults: dict[str, list[str]],
                 method: str) -> list[tuple[str, nn.Module]]:
    """The linear modules that ``names`` (a module whose name is one of them or ends with ``.<name>``) or ``pattern``
    (a regular expression the whole name must match) select, PEFT's rules; neither given: ``defaults`` for the
    model type."""
    if names is None and pattern is None:
        names = defaults.get(model_type(model))
        if names is None:
            raise ValueError(f"{method} has no default target modules for a {model_type(model)!r} model (known: "
                             f"{', '.join(sorted(defaults))}). Name them: target_modules=[...] (module names or their "
                             f"last parts, e.g. {_first_block_linears(model)[:4]}), or target_pattern=<regex>.")
    compiled = re.compile(pattern) if pattern is not None else None
    targets = []
    for name, module in model.named_modules():
        if not name or name.split(".")[0] == "compacter":
            continue
        selected = compiled.fullmatch(name) is not None if compiled is not None else any(
            name == target or name.endswith("." + target) for target in names)
        if selected:
            if _input_width(module) is None:
                raise ValueError(f"{method} targets {name!r}, a {type(module).__name__}: only linear layers can be "
                                 "targets. Name the linear layers inside it.")
            targets.append((name, module))
    if not targets:
        wanted = f"target_pattern={pattern!r}" if compiled is not None else f"target_modules={names}"
        raise ValueError(f"{method}: {wanted} matches no module of this {model_type(model)!r} model. Its linear "
                         f"layers are named like {_first_block_linears(model)[:6]}.")
    return targets


def linear_widths(module: nn.Module) -> tuple[int, int]:
    """(input width, output width) of a linear layer (nn.Linear and its quantized subclasses, GPT-2's Conv1D)."""
    return _input_width(module), _output_width(module)
