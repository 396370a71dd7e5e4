"""What a model answers for one batch, the same in evaluation during training, `compacter evaluate` and
`compacter predict`: generated text (text-to-text), a class index or a score (a classification or regression
head). ``Task.decode`` turns an answer into the task's text."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def batch_answers(model: nn.Module, tokenizer, batch: dict[str, torch.Tensor], *, text_to_text: bool, max_new_tokens: int,
           synced_gpus: bool = False) -> list[str | int | float]:
    """Greedy decoding of ``max_new_tokens`` at most (text-to-text), else the head's argmax or its score."""
    if text_to_text:
        generated = model.generate(**batch, max_new_tokens=max_new_tokens, num_beams=1, do_sample=False,
                                   synced_gpus=synced_gpus)
        return tokenizer.batch_decode(generated, skip_special_tokens=True)
    logits = model(**batch).logits.float()
    if logits.shape[-1] == 1:  # a regression head (STS-B)
        return logits.squeeze(-1).tolist()
    return logits.argmax(-1).tolist()
