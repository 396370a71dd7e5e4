"""Choosing a learning rate on validation: the one rule of `--lr auto`, `compacter sweep` and `compacter report`.

The paper picks each method's learning rate per task on the validation score; so does every part of
compacter that chooses among runs, through :func:`choose_learning_rate`: the highest validation
score (over seeds: their mean) wins; on a tie, the smaller learning rate (the safer one: a rate at
the edge of divergence is not picked for nothing). A score that is not a number (a diverged run)
never wins over one that is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

SELECTION_RULE = "the best validation score; on a tie, the smaller learning rate"


def choose_learning_rate(scores: Iterable[tuple[float, float]]) -> float:
    """The learning rate to keep among (learning rate, validation score) pairs."""
    pairs = [(float(rate), float(score)) for rate, score in scores]
    if not pairs:
        raise ValueError("No runs to choose a learning rate from: give at least one (learning rate, validation score).")
    rates = [rate for rate, _ in pairs]
    if len(set(rates)) != len(rates):
        raise ValueError(f"Each learning rate must have one validation score (average seeds first), got {rates}.")
    return min(pairs, key=_rank)[0]


def _rank(pair: tuple[float, float]) -> tuple[float, float]:
    rate, score = pair
    return (math.inf if math.isnan(score) else -score, rate)
