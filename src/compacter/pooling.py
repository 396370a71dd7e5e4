"""How an encoder classifier pools its tokens into one vector: its own [CLS] pooler, or the mean of its tokens.

transformers' BERT-style classifiers read the base's pooler (BERT: dense + tanh over the [CLS] token). A
sentence-transformers model such as all-MiniLM-L6-v2 was trained to mean-pool its tokens instead (its
``1_Pooling/config.json``), and its [CLS] token and pooler were never trained as a summary: a method that trains
a few parameters cannot turn them into one, while full fine-tuning can. ``set_pooling(model, "mean")`` swaps
the pooler for ``MeanPooler``, the mean over the tokens the attention mask keeps; `compacter train` pools as
the checkpoint was trained to (``checkpoint_pooling``) unless told otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

POOLINGS = ("cls", "mean")


class MeanPooler(nn.Module):
    """The mean of the last hidden states over the positions the attention mask keeps (all, without a mask).

    The mask reaches it through a pre-hook on the base model (``set_pooling``), which holds it for one call.
    """

    def __init__(self) -> None:
        super().__init__()
        self.attention_mask: torch.Tensor | None = None

    def remember_mask(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        self.attention_mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mask, self.attention_mask = self.attention_mask, None
        if mask is None:
            return hidden_states.mean(dim=1)
        if mask.shape != hidden_states.shape[:2]:
            raise ValueError(f"Mean pooling got {tuple(hidden_states.shape[:2])} positions and an attention mask of "
                             f"shape {tuple(mask.shape)}: give the model a mask with one entry per input token.")
        weights = mask.to(hidden_states.dtype).unsqueeze(-1)
        return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


def pooling_of(model: nn.Module) -> str:
    """``"mean"`` where ``set_pooling`` replaced the pooler, else ``"cls"`` (the model's own)."""
    return "mean" if isinstance(getattr(_base(model), "pooler", None), MeanPooler) else "cls"


def set_pooling(model: nn.Module, pooling: str) -> nn.Module:
    """Pool ``model``'s tokens by ``pooling``: ``"cls"`` keeps its own pooler, ``"mean"`` replaces it for good.

    Do it before attaching tasks: a task trains against one pooling and records it when saved.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}: give one of {', '.join(POOLINGS)}.")
    if pooling == pooling_of(model):
        return model
    if pooling == "cls":
        raise ValueError("This model's [CLS] pooler was replaced by mean pooling, which cannot be undone in place; "
                         "build the base model again for pooling='cls'.")
    if getattr(model, "compacter", None) is not None:
        raise ValueError("This model carries compacter tasks, each trained against the model's pooling; set the "
                         "pooling on the bare base model, before compacter.apply or compacter.load.")
    if not reads_pooler(model):
        raise ValueError(f"pooling='mean' replaces the [CLS] pooler a BERT-style classifier reads, and this "
                         f"{type(model).__name__} has none (its classifier pools by itself). Leave pooling at 'cls'.")
    base = _base(model)
    pooler = MeanPooler()
    base.pooler = pooler
    base.register_forward_pre_hook(pooler.remember_mask, with_kwargs=True)
    return model


def reads_pooler(model: nn.Module) -> bool:
    """Whether ``model``'s classifier reads a BERT-style pooler, the module mean pooling replaces: a *Pooler given
    every position's hidden states (ALBERT's is a Linear given [CLS]; RoBERTa's and MPNet's heads pool by
    themselves)."""
    pooler = getattr(_base(model), "pooler", None)
    return isinstance(pooler, nn.Module) and type(pooler).__name__.endswith("Pooler")


def refuse_mean_pooling(model: nn.Module, where: str) -> None:
    """An export to ``where``, whose models pool [CLS], cannot carry a task trained on mean pooling."""
    if pooling_of(model) == "mean":
        raise ValueError(f"This model mean-pools its tokens (pooling='mean'), and {where} builds the base's own "
                         "[CLS] pooler: the task's head would read another vector than it was trained on. Keep it "
                         "as a compacter folder (compacter.save), or train it with pooling='cls' to export it.")


def checkpoint_pooling(name_or_path: str | Path) -> str | None:
    """The pooling a sentence-transformers checkpoint folder was trained with (``1_Pooling/config.json``), if any."""
    path = Path(name_or_path).expanduser() / "1_Pooling" / "config.json"
    try:
        modes = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(modes, dict):
        return None
    if modes.get("pooling_mode_mean_tokens"):
        return "mean"
    if modes.get("pooling_mode_cls_token"):
        return "cls"
    return None


def _base(model: nn.Module) -> nn.Module:
    return getattr(model, "base_model", model)
