"""transformers' Trainer and Seq2SeqTrainer on a model with compacter tasks.

A plain ``transformers.Trainer`` already trains a model that ``compacter.apply`` prepared, and its
checkpoints hold only the tasks' files (``model.save_pretrained`` is adapter-only on such a model).
Two things need these subclasses:

* ``resume_from_checkpoint`` and ``load_best_model_at_end``: transformers reads back a full model or
  a PEFT model's adapter, neither of which a compacter checkpoint is;
* a quantized base: transformers refuses to train a quantized model unless it is a PEFT model.
  The tasks are the trained adapters on the frozen base here, so the check is passed for them.

``train`` holds the output folder's lock (locking.py), and a resume checks each task's files as
``compacter.load`` does, the base model's fingerprint and weights sample included.

    trainer = compacter.integrations.Trainer(model=model, args=args, train_dataset=train)
    trainer.train(resume_from_checkpoint=True)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import transformers
from torch import nn

from .attach import DEFAULT_TASK
from .container import container_of
from .heads import saved_head_shapes
from .locking import folder_lock
from .saving import check_base, load_tensors, read_adapter, saved_files
from .switching import tasks


@contextlib.contextmanager
def _tasks_count_as_adapters(model: nn.Module) -> Iterator[None]:
    """transformers' training check for quantized bases accepts a model whose adapters are loaded."""
    container_of(model)  # a model with no task on it is refused as before: it would train nothing
    previous = model.__dict__.get("_hf_peft_config_loaded")
    if getattr(model, "is_quantized", False):
        model._hf_peft_config_loaded = True
    try:
        yield
    finally:
        if previous is None:
            model.__dict__.pop("_hf_peft_config_loaded", None)
        else:
            model._hf_peft_config_loaded = previous


def load_checkpoint(model: nn.Module, checkpoint: str | os.PathLike) -> None:
    """Load every task's tensors from a folder written by ``model.save_pretrained`` (a Trainer checkpoint)."""
    root = Path(checkpoint)
    for name in tasks(model):
        folder = root if name == DEFAULT_TASK else root / name
        if not saved_files(folder)[0].is_file():
            raise ValueError(f"{checkpoint} holds no files for task {name!r} (expected {saved_files(folder)[0]}); "
                             "it was not written for this model's tasks.")
        description, tensors = read_adapter(folder)
        # a checkpoint of a run on another base model is refused (a task's own head size is no other base: heads.py)
        check_base(model, description, folder, heads=saved_head_shapes(model, tensors))
        load_tensors(model, tensors, name=name, source=folder)


class _CompacterTrainerMixin:
    def __init__(self, model: nn.Module | None = None, *args, **kwargs) -> None:
        if model is None:
            raise ValueError("Pass the model with its compacter tasks: Trainer(model=model, ...).")
        with _tasks_count_as_adapters(model):
            super().__init__(model, *args, **kwargs)

    def train(self, *args, **kwargs):
        """transformers' ``train``, holding the output folder's lock (locking.py): one writer per folder."""
        writes = self.args.process_index == 0 and self.args.output_dir is not None
        with folder_lock(self.args.output_dir) if writes else contextlib.nullcontext():
            return super().train(*args, **kwargs)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        load_checkpoint(model if model is not None else self.model, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        load_checkpoint(self.model, self.state.best_model_checkpoint)


class Trainer(_CompacterTrainerMixin, transformers.Trainer):
    """``transformers.Trainer`` whose checkpoints are a model's compacter tasks (see the module docstring)."""


class Seq2SeqTrainer(_CompacterTrainerMixin, transformers.Seq2SeqTrainer):
    """``transformers.Seq2SeqTrainer`` whose checkpoints are a model's compacter tasks."""
