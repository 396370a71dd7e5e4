"""The paper's metrics (SPEC §4), from generated strings, ×100.

A prediction that does not parse as one of the task's labels (or as a number for STS-B) counts
as wrong and is counted in ``invalid``; it never raises. Computed with scikit-learn and scipy.
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from .tasks import Task

INVALID_STSB = -1.0  # outside 0..5, as the authors' code does for an unparseable score


def parse_label(task: Task, text: str) -> int | None:
    text = text.strip()
    return task.labels.index(text) if task.labels and text in task.labels else None


def _float(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _wrong_for(gold: int, num_labels: int) -> int:
    """A label that is surely wrong: the other class in binary tasks, else an extra class."""
    return 1 - gold if num_labels == 2 else num_labels


def normalize_answer(text: str) -> str:
    """SQuAD/ReCoRD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    predicted, truth = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((Counter(predicted) & Counter(truth)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(truth)
    return 2 * precision * recall / (precision + recall)


def compute_metrics(task: Task, predictions: list[str], examples: list[dict]) -> dict:
    """All of the task's metrics, their mean ("score"), and how many predictions were invalid."""
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples: they must pair up line by line.")
    if not examples:
        raise ValueError("No examples to score.")
    if task.name == "stsb":
        results, invalid = _stsb(predictions, examples)
    elif task.labels is None:  # free text against gold answers: ReCoRD, your own text-to-text data
        results, invalid = _record(predictions, examples)
    else:
        results, invalid = _classification(task, predictions, examples)
    results = {name: 100.0 * float(value) for name, value in results.items()}
    return {**results, "score": float(np.mean(list(results.values()))), "invalid": invalid, "n": len(examples)}


def _stsb(predictions: list[str], examples: list[dict]) -> tuple[dict, int]:
    parsed = [_float(p) for p in predictions]
    invalid = sum(p is None for p in parsed)
    predicted = np.array([INVALID_STSB if p is None else p for p in parsed])
    gold = np.array([float(e["label"]) for e in examples])
    if np.std(predicted) == 0 or np.std(gold) == 0:  # correlation undefined: no signal at all
        return {"pearson": 0.0, "spearman": 0.0}, invalid
    return {"pearson": pearsonr(predicted, gold)[0], "spearman": spearmanr(predicted, gold)[0]}, invalid


def _classification(task: Task, predictions: list[str], examples: list[dict]) -> tuple[dict, int]:
    gold = [int(e["label"]) for e in examples]
    parsed = [parse_label(task, p) for p in predictions]
    invalid = sum(p is None for p in parsed)
    num_labels = len(task.labels)
    predicted = [_wrong_for(g, num_labels) if p is None else p for p, g in zip(parsed, gold)]
    results = {}
    for metric in task.metrics:
        if metric == "accuracy":
            results[metric] = accuracy_score(gold, predicted)
        elif metric == "f1":
            results[metric] = f1_score(gold, predicted, pos_label=1, average="binary", zero_division=0)
        elif metric == "f1_macro":
            results[metric] = f1_score(gold, predicted, labels=list(range(num_labels)), average="macro",
                                       zero_division=0)
        elif metric == "matthews_correlation":
            results[metric] = matthews_corrcoef(gold, predicted)
        elif metric == "f1a":  # MultiRC: F1 over all answer options
            results[metric] = f1_score(gold, predicted, pos_label=1, average="binary", zero_division=0)
        elif metric == "exact_match":  # MultiRC: a question counts when all its answers are right
            by_question = defaultdict(list)
            for example, p, g in zip(examples, predicted, gold):
                idx = example["idx"]
                by_question[(idx["paragraph"], idx["question"])].append(p == g)
            results[metric] = np.mean([all(v) for v in by_question.values()])
    return results, invalid


def _record(predictions: list[str], examples: list[dict]) -> tuple[dict, int]:
    f1s, ems, invalid = [], [], 0
    for prediction, example in zip(predictions, examples):
        answers = example["answers"]
        if not prediction.strip():
            invalid += 1
        f1s.append(max((token_f1(prediction, a) for a in answers), default=0.0))
        ems.append(max((float(normalize_answer(prediction) == normalize_answer(a)) for a in answers), default=0.0))
    return {"f1": np.mean(f1s), "exact_match": np.mean(ems)}, invalid
