"""The training loss: a sum over the examples (classification) or target tokens (text-to-text), and what it is
divided by, so that any split of a global batch into processes and accumulation steps gives the same gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def loss_count(rows: list[dict]) -> int:
    """What the loss averages over: target tokens (text-to-text) or examples."""
    return sum(len(r["labels"]) for r in rows) if isinstance(rows[0]["labels"], list) else len(rows)


def summed_loss(forward, model, batch: dict, text_to_text: bool) -> torch.Tensor:
    labels = batch.pop("labels")
    if text_to_text:
        batch["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = forward(**batch).logits
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
    logits = forward(**batch).logits.float()
    if logits.shape[-1] == 1:  # a regression head (STS-B)
        return F.mse_loss(logits.squeeze(-1), labels.float(), reduction="sum")
    return F.cross_entropy(logits, labels, reduction="sum")
