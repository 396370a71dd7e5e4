"""Prompt tuning (Lester et al., 2021): trained vectors in front of the encoder's input; all else frozen.

``prompt-r`` draws the vectors from uniform(−0.5, 0.5); ``prompt-t`` copies the embeddings of
randomly chosen frequent tokens. "Frequent" needs the vocabulary's order: T5's SentencePiece ids
are sorted by piece score (≈ frequency), so ids 3..5002 are its 5,000 most frequent pieces after
<pad>, </s> and <unk> (Lester et al. sample from the 5,000 most common tokens too); BERT-style
uncased WordPiece vocabularies list whole words by frequency from id 1996 on (below it are
[unused], special and single-character entries). Other vocabularies sample from all ids except
the special ones; ``vocab_ids=[start, stop]`` overrides the range.

Where the prompt goes:

* encoder-decoder models (T5): in front of the encoder input; the attention mask is extended both
  for the encoder and for the decoder's cross-attention, also during ``generate``;
* encoder models (BERT): right after the first token, so that a [CLS] pooler still pools [CLS];
* decoder-only classifiers (GPT-2, Llama ... ``ForSequenceClassification``): in front, so that
  every token attends to it; their head reads the last non-padding token, which it finds from
  ``input_ids``, so the prompt's positions are dropped from the head's output to keep that index
  right.

Models with absolute positions refuse an input that no longer fits with the prompt. Decoder-only
language models (``ForCausalLM``) are refused: their generation loop tracks cache positions the
prompt would shift; use an adapter method on them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..devices import execution_device, stored_value
from ..model_anatomy import model_family, model_type
from .base import MethodConfig, TaskModules
from .settings import setting

FREQUENT_TOKEN_IDS = {
    "t5": (3, 5003),
    "mt5": (3, 5003),
    "umt5": (3, 5003),
    "bert": (1996, 6996),
    "distilbert": (1996, 6996),
    "electra": (1996, 6996),
}


@dataclass
class PromptConfig(MethodConfig):
    kind: ClassVar[str] = "prompt"
    routable: ClassVar[bool] = False
    unroutable_reason: ClassVar[str] = "its prompt changes the length of the input"
    param_groups: ClassVar[dict[str, str]] = {"prompt": "prompt"}
    num_tokens: int = setting(100, at_least=1)
    # "random": uniform(−init_range, init_range); "vocab": embeddings of frequent tokens
    init: str = setting("random", choices=("random", "vocab"))
    init_range: float = setting(0.5, above=0)
    vocab_ids: list[int] | None = setting(None, at_least=0)  # [start, stop) of the token ids "vocab" samples from
    train_layer_norms: bool = False  # the paper freezes the whole model for prompt tuning

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vocab_ids is not None and (len(self.vocab_ids) != 2 or self.vocab_ids[0] >= self.vocab_ids[1]):
            raise ValueError(f"vocab_ids must be [start, stop) with start < stop, e.g. [3, 5003], got {self.vocab_ids}.")

    def attach(self, model: nn.Module, task: TaskModules) -> None:
        config = getattr(model, "config", None)
        head = None
        family = model_family(model)
        if family == "seq2seq":
            position, encoder = 0, model.get_encoder()
        elif family == "decoder":
            head = getattr(model, "score", None)
            if _generates(model) or head is None:
                raise ValueError(f"Prompt tuning does not support decoder-only language models such as this "
                                 f"{type(model).__name__}: their generation loop would misplace the prompt. Use an "
                                 "adapter method such as 'compacter++' or 'adapter' on it, or prompt-tune its "
                                 "ForSequenceClassification model for a classification task.")
            position, encoder = 0, model.base_model
        else:
            position, encoder = 1, getattr(model, "base_model", model)
        embedding = encoder.get_input_embeddings()
        max_positions = None if family == "seq2seq" else _max_positions(config)
        # an offloaded embedding (accelerate): its values from the weights map, the prompt on its execution device
        embedding_name = next(name for name, module in model.named_modules() if module is embedding)
        vectors = self._initial_vectors(model, stored_value(model, f"{embedding_name}.weight"))
        prompt = Prompt(vectors.to(execution_device(model, embedding_name)), position, max_positions)
        task.add_module("prompt", prompt)
        task.on_switch.append(prompt.set_enabled)
        task.hooks.append(encoder.register_forward_pre_hook(prompt.extend_encoder_input, with_kwargs=True))
        if head is not None:
            task.hooks.append(head.register_forward_hook(prompt.drop_prompt_positions))
        elif encoder is not model:
            task.hooks.append(model.register_forward_pre_hook(prompt.extend_top_level_mask, with_kwargs=True))

    def _initial_vectors(self, model: nn.Module, embeddings: torch.Tensor) -> torch.Tensor:
        shape = (self.num_tokens, embeddings.shape[1])
        factory = {"device": embeddings.device, "dtype": torch.float32}  # trained: fp32 whatever the base's dtype
        if self.init == "random":
            return torch.empty(shape, **factory).uniform_(-self.init_range, self.init_range)
        vocab_size = embeddings.shape[0]
        start, stop = self.vocab_ids or FREQUENT_TOKEN_IDS.get(model_type(model), (0, vocab_size))
        stop = min(stop, vocab_size)
        special = {getattr(model.config, f"{kind}_token_id", None) for kind in ("pad", "eos", "bos", "unk", "sep", "cls")}
        candidates = torch.tensor([i for i in range(start, stop) if i not in special])
        if len(candidates) == 0:
            raise ValueError(f"vocab_ids={[start, stop]} holds no token id of this {vocab_size}-token vocabulary.")
        if len(candidates) >= self.num_tokens:
            chosen = candidates[torch.randperm(len(candidates))[: self.num_tokens]]
        else:
            chosen = candidates[torch.randint(len(candidates), (self.num_tokens,))]
        return embeddings.detach()[chosen.to(embeddings.device)].to(torch.float32)


def _generates(model: nn.Module) -> bool:
    return type(model).__name__.endswith(("ForCausalLM", "LMHeadModel"))


def _max_positions(config) -> int | None:
    """The length limit of absolute position embeddings; None for rotary / relative positions."""
    if getattr(config, "position_embedding_type", "absolute") != "absolute" or hasattr(config, "rope_theta") \
            or getattr(config, "rope_parameters", None) is not None:
        return None
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


class Prompt(nn.Module):
    """The prompt vectors and the hooks that put them into the encoder's input."""

    def __init__(self, vectors: torch.Tensor, position: int, max_positions: int | None):
        super().__init__()
        self.embeddings = nn.Parameter(vectors)
        self.position = position  # inserted before this input position
        self.max_positions = max_positions
        self.enabled = True  # False runs the frozen model unchanged (set while its task is not the active one)

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled

    @property
    def length(self) -> int:
        return self.embeddings.shape[0]

    def extend_encoder_input(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if not self.enabled:
            return args, kwargs
        kwargs = _as_keywords(module, args, kwargs)
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            embeds = module.get_input_embeddings()(kwargs["input_ids"])
        batch, length = embeds.shape[:2]
        if self.max_positions is not None and length + self.length > self.max_positions:
            raise ValueError(f"An input of {length} tokens and a prompt of {self.length} tokens make "
                             f"{length + self.length} positions, more than this model's {self.max_positions}. "
                             f"Truncate inputs to at most {self.max_positions - self.length} tokens "
                             "(max_source_length) or use fewer prompt tokens (num_tokens).")
        prompt = self.embeddings.to(embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
        kwargs["inputs_embeds"] = self._insert(embeds, prompt)
        kwargs["input_ids"] = None
        kwargs["attention_mask"] = self._extend_mask(kwargs.get("attention_mask"), length)
        token_types = kwargs.get("token_type_ids")
        if token_types is not None:
            kwargs["token_type_ids"] = self._insert(token_types, token_types.new_zeros(batch, self.length))
        if kwargs.get("position_ids") is not None:
            raise ValueError("Prompt tuning cannot shift explicit position_ids; leave position_ids unset.")
        return (), kwargs

    def drop_prompt_positions(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """A decoder classifier's per-position head output without the prompt's positions: the model
        then picks its last non-padding token at the index it finds in ``input_ids``."""
        if not self.enabled:
            return output
        return torch.cat([output[:, : self.position], output[:, self.position + self.length:]], dim=1)

    def extend_top_level_mask(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Extend the mask the decoder's cross-attention gets (the encoder output includes the prompt)."""
        if not self.enabled:
            return args, kwargs
        kwargs = _as_keywords(module, args, kwargs)
        encoder_outputs = kwargs.get("encoder_outputs")
        if encoder_outputs is not None:
            source_length = encoder_outputs[0].shape[1] - self.length
        else:
            source = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs.get("inputs_embeds")
            source_length = None if source is None else source.shape[1]
        kwargs["attention_mask"] = self._extend_mask(kwargs.get("attention_mask"), source_length)
        return (), kwargs

    def _extend_mask(self, mask: torch.Tensor | None, source_length: int | None) -> torch.Tensor | None:
        """A mask over the source gets ones for the prompt; one that already covers it is left as it is."""
        if mask is None or mask.shape[1] != source_length:
            return mask
        return self._insert(mask, mask.new_ones(mask.shape[0], self.length))

    def _insert(self, sequence: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        return torch.cat([sequence[:, : self.position], prompt, sequence[:, self.position:]], dim=1)


def _as_keywords(module: nn.Module, args: tuple, kwargs: dict) -> dict:
    """All of a forward call's arguments by name, so that hooks can read and replace them."""
    if not args:
        return dict(kwargs)
    names = [p.name for p in inspect.signature(module.forward).parameters.values()
             if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return {**dict(zip(names, args)), **kwargs}
