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
tree (site_inference.py): what was chosen is printed, and the user can override either pattern.
Finding the sites of a model by these patterns is placement.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


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
