"""The paper's splits (SPEC §4) and nested low-resource subsets.

* Large datasets (≥ 10k training examples: SST-2, QQP, QNLI, ReCoRD): 1,000 training examples,
  drawn with the seed, become the validation set; the original validation set is the test set.
* MNLI (the authors' code): validation = validation_mismatched, test = validation_matched.
* Small datasets: the original validation set, shuffled with the seed, is cut in half: first
  half validation, second half test. MultiRC and ReCoRD are cut between groups (paragraph /
  passage), so no question's answers end up on both sides.
* Low resource: the training set in one seeded order, its first N examples; a smaller subset is
  therefore always inside a larger one with the same seed.
"""

from __future__ import annotations

import numpy as np

from .tasks import Task

PAPER_SEED = 42
LARGE_VALIDATION_SIZE = 1_000


def _group_of(task: Task, example: dict):
    idx = example.get("idx")
    if isinstance(idx, dict) and task.group_key in idx:
        return idx[task.group_key]
    return example.get(task.group_key)


def _shuffled_halves(task: Task, examples: list[dict], seed: int) -> tuple[list[dict], list[dict]]:
    rng = np.random.RandomState(seed)
    if task.group_key is None:
        order = rng.permutation(len(examples))
        half = len(examples) // 2
        return [examples[i] for i in order[:half]], [examples[i] for i in order[half:]]
    groups = list(dict.fromkeys(_group_of(task, e) for e in examples))
    order = rng.permutation(len(groups))
    first = {groups[i] for i in order[: len(groups) // 2]}
    return ([e for e in examples if _group_of(task, e) in first], [e for e in examples if _group_of(task, e) not in first])


def paper_splits(task: Task, raw: dict[str, list[dict]], seed: int = PAPER_SEED) -> dict[str, list[dict]]:
    """train / validation / test of ``task`` from its raw splits, as the paper made them."""
    if task.name == "mnli":
        return {"train": raw["train"], "validation": raw["validation_mismatched"], "test": raw["validation_matched"]}
    if task.large:
        order = np.random.RandomState(seed).permutation(len(raw["train"]))
        size = min(LARGE_VALIDATION_SIZE, len(order) // 2)  # half, for a local file under 2,000 examples
        train = raw["train"]
        return {"train": [train[i] for i in order[size:]], "validation": [train[i] for i in order[:size]],
                "test": raw["validation"]}
    validation, test = _shuffled_halves(task, raw["validation"], seed)
    return {"train": raw["train"], "validation": validation, "test": test}


def low_resource(train: list[dict], size: int | None, seed: int = PAPER_SEED) -> list[dict]:
    """The first ``size`` examples of one seeded order of ``train`` (nested across sizes)."""
    if size is None:
        return train
    if size < 1:
        raise ValueError(f"A training-set size must be positive, got {size}.")
    if size > len(train):
        raise ValueError(f"Asked for {size} training examples but the training split has only {len(train)}.")
    order = np.random.RandomState(seed).permutation(len(train))
    return [train[i] for i in sorted(order[:size])]
