"""Adapter sites of a model that is not in the family table (architectures.py), inferred from its module tree."""

from __future__ import annotations

import re
import warnings

from torch import nn

from .architectures import SUBLAYERS, ArchitectureSpec
from .model_anatomy import input_width, model_type, output_width

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
                             if name and output_width(module) is None and _ATTENTION_NAME.search(_leaf(name))
                             and not _inside(name, cross) and _input_projections(name, modules)])
    if len(attentions) != 1:
        return None
    attention = attentions[0]
    width = input_width(modules[_input_projections(attention, modules)[0]])  # the block's hidden size
    attention_outputs = [name for name in _linears_inside(attention, modules, width)
                         if not _INPUT_PROJECTION_NAME.fullmatch(_leaf(name))]
    feed_forward_output = _feed_forward_output(modules, cross + [attention], width)
    if not attention_outputs or feed_forward_output is None:
        return None
    return attention_outputs[-1], feed_forward_output


def _feed_forward_output(modules: dict[str, nn.Module], attentions: list[str], width: int) -> str | None:
    mlps = _outermost([name for name, module in modules.items()
                       if name and output_width(module) is None and _FEED_FORWARD_NAME.search(_leaf(name))
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
            and output_width(module) is not None and _INPUT_PROJECTION_NAME.fullmatch(_leaf(name))]


def _linears_inside(container: str, modules: dict[str, nn.Module], width: int | None) -> list[str]:
    """Linear modules inside ``container`` ("" = the block) that output ``width`` (any width when None)."""
    return [name for name, module in modules.items() if (not container or _inside(name, [container]))
            and output_width(module) is not None and (width is None or output_width(module) == width)]


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
