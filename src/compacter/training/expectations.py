"""What the quality benchmark measured for a method, said by `compacter train` before it trains.

benchmarks/quality.py (README, "Quality over datasets and seeds") trains every method on real-text
corpora over several seeds and writes, with ``--summary``, each method's mean gap to full fine-tuning
and its 95% interval into ``measured/quality.json`` in this package. A run of a method and model family
it measured gets that line first, so a user knows what the default buys before spending the time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import TrainConfig

SUMMARY = Path(__file__).resolve().parent.parent / "measured" / "quality.json"
FEW_EXAMPLES = 1000  # a run on at most this many training examples is compared with the 100-example runs
SIZE_WORDS = {"whole": "on the whole training set", "100": "with 100 training examples"}


def expectation(method: str, family: str, train_size: int | None, auto: bool,
                summary: Path | None = None, learning_rate: float | None = None) -> str | None:
    """One line on what ``method`` gave against full fine-tuning on models of ``family``, and on each other recipe
    of the benchmark that came closer to it; None when not measured. ``summary``: the benchmark's summary file
    (default: the package's); ``learning_rate``: the run's, so that a recipe that sets the head's rate as a multiple
    of it is said as the flag to type (``--head-lr 0.009``)."""
    summary = SUMMARY if summary is None else summary
    if not summary.is_file():
        return None
    measured = json.loads(summary.read_text(encoding="utf-8"))
    where = (f"on {measured['model']} over {len(measured['corpora'])} real-text corpora ({', '.join(measured['corpora'])}),"
             f" {measured['source']}")
    if family != measured["family"]:
        return (f"What to expect: not measured for {family} models; the benchmark measured {measured['family']} models "
                f"{where}.")
    size = "100" if train_size is not None and train_size <= FEW_EXAMPLES else "whole"
    setting = "auto" if auto else "default"
    entry = measured["entries"].get(setting, {}).get(size, {}).get(method)
    if entry is None:
        return None
    rate = "with --lr auto" if auto else "at its default learning rate"
    if method == "full":
        return f"What to expect: full fine-tuning {rate} scored {entry['accuracy']:.1f} {SIZE_WORDS[size]}, {where}."
    accuracy = ("" if entry["accuracy"] is None or entry["full_accuracy"] is None
                else f"; test accuracy {entry['accuracy']:.1f} against {entry['full_accuracy']:.1f}")
    line = (f"What to expect: {method} {rate} scored {_gap(entry)} full fine-tuning{_interval(entry)} "
            f"{SIZE_WORDS[size]}{accuracy}{_seeds(entry, '; ')}, {where}.")
    for name, recipe in measured.get("recipes", {}).items():  # another recipe, measured against full's defaults
        other = measured["entries"].get(setting, {}).get(name, {}).get(method)
        # only the recipes that came closer to full fine-tuning than the default: what a user could do about a gap
        if recipe["base"] == size and other is not None and other.get("gap") is not None and other["gap"] > entry["gap"]:
            line += (f" With {recipe_flags(recipe, learning_rate)} ({recipe['title']}{_cost(recipe)}) it scored "
                     f"{_gap(other)} full fine-tuning's defaults{_interval(other)}{_seeds(other, ', ')}")
            same = other.get("same_recipe")  # full fine-tuning trained with the same flags, where it has run
            line += (f", and {_gap(same)} full fine-tuning with {recipe_flags(recipe)} too{_interval(same)}."
                     if same else ".")
    return line


def recipe_flags(recipe: dict, learning_rate: float | None = None) -> str:
    """How `compacter train` sets a benchmark recipe: its ``flags``, and the head's rate where the recipe sets it as a
    multiple of the method's (``head_lr_factor``): the value to type for a run at ``learning_rate`` (``--head-lr
    0.009``), else the multiple in words (``--head-lr 3× --lr``)."""
    flags = [recipe["flags"]] if recipe.get("flags") else []
    factor = recipe.get("head_lr_factor")
    if factor is not None:
        flags.append(f"--head-lr {factor * learning_rate:g}" if learning_rate is not None
                     else "--head-lr equal to --lr" if factor == 1 else f"--head-lr {factor:g}× --lr")
    return " ".join(flags)


def _cost(recipe: dict) -> str:
    """What a recipe that trains longer costs: its optimizer steps as a multiple of the defaults' (the same examples,
    more epochs), so about that multiple of the time."""
    factor = recipe.get("steps_factor", 1.0)
    return f"; {factor:.1f}× the steps of the defaults" if factor != 1.0 else ""


def _gap(entry: dict) -> str:
    return f"{abs(entry['gap']):.1f} points {'below' if entry['gap'] < 0 else 'above'}"


def _interval(entry: dict) -> str:
    interval = entry.get("interval")
    return f" (95% interval {interval[0]:+.1f} to {interval[1]:+.1f})" if interval else ""


def _seeds(entry: dict, separator: str) -> str:
    seeds = entry.get("seeds")
    return f"{separator}{seeds} seed{'s' if seeds != 1 else ''} a corpus" if seeds else ""


def expectation_for_run(config: TrainConfig, auto: bool) -> str | None:
    """:func:`expectation` for a run about to start; None too when the model's family cannot be read yet."""
    try:
        family = config.model_family()
        learning_rate = None if auto else config.learning_rate_choice().value
    except ValueError:
        return None
    return expectation(config.method, family, config.train_size, auto, learning_rate=learning_rate)
