"""Routing: each row of a batch runs its own task (``compacter.route``).

Row ``i`` of a batch runs task ``tasks[rows[i]]``. A batch that a model expands (beam search,
``num_return_sequences``: each row repeated k times, consecutively) or flattens (tokens as rows)
keeps each row's task: a leading size of k·B maps row j to the task of row ``j // k``.

This module imports nothing else of compacter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# the inputs of a call whose leading dimension is the batch
BATCHED_INPUTS = ("input_ids", "inputs_embeds", "attention_mask", "token_type_ids", "decoder_input_ids",
                  "decoder_inputs_embeds", "decoder_attention_mask", "labels")


@dataclass
class Routing:
    tasks: tuple[str, ...]  # the distinct routed tasks, in first-seen order
    rows: torch.Tensor  # row → index into ``tasks``
    generating: bool = False  # inside generate(), whose beams / returned sequences repeat each row
    cache: dict = field(default_factory=dict)  # what is derived from the routing alone, kept while it lasts
    names: tuple[str, ...] = ()  # each row's task, on the host
    label_counts: tuple[int, ...] = ()  # each routed task's label count, where the tasks' heads differ in size

    def check_batch(self, args: tuple, kwargs: dict) -> None:
        """A call from outside must bring exactly one row per routed task name in every batched input (generate()
        expands them itself)."""
        if self.generating:
            return
        size = batch_size(args, kwargs)
        if size is not None and size != self.rows.shape[0]:
            raise ValueError(f"compacter.route() names the tasks of {self.rows.shape[0]} rows, but the model was called "
                             f"with {size} rows. Give one task per row of the batch.")
        if self.label_counts and kwargs.get("labels") is not None:
            raise ValueError(f"compacter.route() runs tasks whose heads have other label counts "
                             f"({dict(zip(self.tasks, self.label_counts))}): the model has no one loss for their rows. "
                             "Call it without labels= and compute each task's loss from "
                             "compacter.split_logits(model, logits, tasks).")
        for name in BATCHED_INPUTS:
            value = kwargs.get(name)
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] != self.rows.shape[0]:
                raise ValueError(f"compacter.route() names the tasks of {self.rows.shape[0]} rows, but {name} has "
                                 f"{value.shape[0]} rows. Give every input one row per routed task.")

    def row_index(self, hidden: torch.Tensor) -> torch.Tensor:
        """Each leading row of ``hidden``'s task index (rows repeated or flattened by the model included)."""
        batch, leading = self.rows.shape[0], hidden.shape[0]
        key = ("rows", leading, hidden.device)
        if key not in self.cache:
            if leading % batch:
                raise ValueError(f"compacter.route() names the tasks of {batch} rows, but the model was called with "
                                 f"{leading} rows. Give one task per row of the batch.")
            self.cache[key] = self.rows.repeat_interleave(leading // batch).to(hidden.device)
        return self.cache[key]


def batch_size(args: tuple, kwargs: dict) -> int | None:
    """The leading size of a call's first tensor input (input_ids, inputs_embeds, ...), if it has one."""
    for value in (*args, *(kwargs.get(k) for k in ("input_ids", "inputs_embeds", "decoder_input_ids"))):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    return None


def per_row(values: torch.Tensor, rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values[rows]`` shaped to broadcast over ``like``'s middle dimensions: (rows, 1, ..., 1, width)."""
    picked = values.index_select(0, rows)
    return picked.view(picked.shape[0], *([1] * (like.dim() - 2)), picked.shape[-1])
