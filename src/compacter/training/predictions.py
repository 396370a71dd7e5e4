"""A split's predictions during training (validation, test) and in `compacter evaluate`: batches decoded over
every process, answers put back in the split's order."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..data import TaskData
from ..decoding import batch_answers
from . import distributed
from .config import TrainConfig
from .inputs import collate


@torch.no_grad()
def predict(model, rows: list[dict], data: TaskData, text_to_text: bool, config: TrainConfig,
            processes: distributed.Processes, pad_id: int, tokenizer, autocast) -> list[str]:
    """Predictions as strings (label names, scores or generated text), in the split's order."""
    indices = list(range(processes.rank, len(rows), processes.world))
    size, mine = config.eval_batch_size, []
    # A sharded model runs collectives in every forward: all processes run as many batches as the one
    # with the most examples (a short one repeats an example) and generate until all are done.
    sharded = config.fsdp and processes.world > 1
    if sharded:
        model.unshard()  # generate() calls the encoder directly, outside the root unit's forward
    starts = range(0, len(range(0, len(rows), processes.world)) if sharded else len(indices), size)
    for start in tqdm(starts, desc="evaluating", leave=False, disable=not processes.main):
        chosen = indices[start: start + size]
        part = [rows[i] for i in (chosen or indices[-1:] or [0])]
        batch = {k: v.to(processes.device) for k, v in collate(part, pad_id).items() if k != "labels"}
        with autocast:
            answers = batch_answers(model, tokenizer, batch, text_to_text=text_to_text,
                                    max_new_tokens=config.max_target_length, synced_gpus=sharded,
                                    compile_backend="inductor" if config.compile and not sharded else None)
            outputs = [data.task.decode(output) for output in answers]
        mine += outputs[: len(chosen)]
    if sharded:
        model.reshard()
    ordered: list[str | None] = [None] * len(rows)
    for rank, predictions in enumerate(distributed.gather(mine, processes)):
        for index, prediction in zip(range(rank, len(rows), processes.world), predictions):
            ordered[index] = prediction
    return ordered
