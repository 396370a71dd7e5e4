"""What a run reads, and its examples as tokenised batches.

``read_inputs`` reads and checks everything a run starts from (the model's config, the data, the
tokenizer) and computes the run's identity, before anything is written. Then the examples become
token ids: text-to-text for seq2seq models, classification otherwise.

The order of training examples is a pure function of (seed, epoch), so a resumed run (or
another number of processes) sees exactly the same global batches as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import transformers

from ..data import TaskData, load_task
from ..data.files import load_files
from ..data.splits import low_resource
from ..data.tasks import Task
from ..inventory import architecture_fingerprint
from ..model_anatomy import model_family
from ..models import build_model, check_source, load_config
from .config import TrainConfig
from .identity import run_identity


@dataclass
class RunInputs:
    config: TrainConfig  # resolved
    data: TaskData
    tokenizer: Any
    text_to_text: bool  # a seq2seq model, trained text-to-text; else a classifier with a new head
    identity: dict[str, Any]  # identity.py


def read_inputs(config: TrainConfig) -> RunInputs:
    """Read and check what ``config`` names; nothing is written."""
    check_source(config.model, "--model")
    model_config = load_config(config.model)
    config = config.with_paper_warmup(model_config).with_head_learning_rate(model_config)
    text_to_text = model_family(model_config) == "seq2seq"
    data = load_splits(config)
    tokenizer = load_tokenizer(config.tokenizer or config.model, "--tokenizer" if config.tokenizer else "--model")
    vocabulary = getattr(model_config, "vocab_size", None)
    if isinstance(vocabulary, int) and len(tokenizer) > vocabulary:
        raise ValueError(f"The tokenizer of {config.tokenizer or config.model} has {len(tokenizer)} tokens, more than "
                         f"the {vocabulary} embeddings of {config.model}: they do not belong together. Give the "
                         "model's own tokenizer (--tokenizer).")
    num_labels = None if text_to_text else data.num_labels
    skeleton = build_model(config.model, pretrained=False, meta=True, num_labels=num_labels,
                           pooling=config.pooling)  # shapes only
    identity = run_identity(config, data, tokenizer, architecture_fingerprint(skeleton))
    return RunInputs(config, data, tokenizer, text_to_text, identity)


def load_tokenizer(name: str, option: str):
    check_source(name, option)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{option} {name}: no tokenizer could be loaded from it ({reason}). Give a folder with the "
                         "tokenizer's files (tokenizer.json, or vocab / sentencepiece files) or a hub name.") from None
    if len(tokenizer) <= len(set(tokenizer.all_special_tokens)):
        raise ValueError(f"{option} {name}: its tokenizer has no vocabulary beyond its {len(tokenizer)} special "
                         "tokens (the folder lacks the tokenizer's files, e.g. tokenizer.json or vocab.txt). Give "
                         "the folder that holds them with --tokenizer.")
    return tokenizer


def load_splits(config: TrainConfig) -> TaskData:
    if config.is_custom:
        task, splits = load_files(config.task, text_column=config.text_column, text_pair_column=config.text_pair_column,
                                  label_column=config.label_column, source_column=config.source_column,
                                  target_column=config.target_column, seed=config.seed)
        splits["train"] = low_resource(splits["train"], config.train_size, config.seed)
        return TaskData(task, splits)
    return load_task(config.task, config.data_dir, train_size=config.train_size)


def encode(tokenizer, task: Task, examples: list[dict], *, text_to_text: bool, source_length: int,
           target_length: int) -> list[dict]:
    """Token ids per example; labels are target token ids (text-to-text) or a class id / score."""
    if text_to_text:
        pairs = [task.template(e) for e in examples]
        sources = tokenizer([s for s, _ in pairs], max_length=source_length, truncation=True)["input_ids"]
        targets = tokenizer(text_target=[t for _, t in pairs], max_length=target_length, truncation=True)["input_ids"]
        return [{"input_ids": s, "labels": t} for s, t in zip(sources, targets)]
    fields = task.classification_fields
    if fields is None:
        raise ValueError(f"{task.name} has no classification form; train it text-to-text with a seq2seq model (T5).")
    texts, pairs = zip(*(task.classification_texts(e) for e in examples))
    encoded = tokenizer(list(texts), None if pairs[0] is None else list(pairs), max_length=source_length,
                        truncation=True)
    keys = [k for k in ("input_ids", "token_type_ids") if k in encoded]
    return [{**{k: encoded[k][i] for k in keys}, "labels": e["label"]} for i, e in enumerate(examples)]


def collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest row of the batch; labels of text-to-text are padded with -100 (ignored)."""
    length = max(len(r["input_ids"]) for r in rows)
    batch = {
        "input_ids": torch.tensor([r["input_ids"] + [pad_id] * (length - len(r["input_ids"])) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * (length - len(r["input_ids"])) for r in rows]),
    }
    if "token_type_ids" in rows[0]:
        batch["token_type_ids"] = torch.tensor([r["token_type_ids"] + [0] * (length - len(r["token_type_ids"]))
                                                for r in rows])
    if isinstance(rows[0]["labels"], list):
        target = max(len(r["labels"]) for r in rows)
        batch["labels"] = torch.tensor([r["labels"] + [-100] * (target - len(r["labels"])) for r in rows])
    else:
        batch["labels"] = torch.tensor([r["labels"] for r in rows])
    return batch


def epoch_order(size: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(size, generator=generator).tolist()


def global_batches(size: int, batch_size: int, seed: int, epoch: int, minimum: int = 1) -> list[list[int]]:
    """The epoch's global batches of example indices; the last one may be smaller, but not below ``minimum``
    (every process and accumulation step needs an example), else it is left out."""
    order = epoch_order(size, seed, epoch)
    batches = [order[i: i + batch_size] for i in range(0, size, batch_size)]
    return batches if len(batches[-1]) >= minimum else batches[:-1]


def shard(indices: list[int], parts: int, part: int) -> list[int]:
    """This process's contiguous share of a global batch (sizes differ by at most one)."""
    bounds = [round(i * len(indices) / parts) for i in range(parts + 1)]
    return indices[bounds[part]: bounds[part + 1]]
