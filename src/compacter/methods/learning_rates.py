"""Default learning rates that fit the model: the paper's for T5-style seq2seq models, others per family.

The paper tuned every method's learning rate for T5 (full fine-tuning 3e-4, Compacter 3e-3, ...):
``PAPER_RATES``, filled by ``register_method`` in methods/__init__.py (its ``learning_rate=``). On
other model families they can be far off: on all-MiniLM-L6-v2 full fine-tuning at 3e-4 loses points
against 1e-4. So a run that gives no learning rate gets the default of its model's *family*:

* ``seq2seq`` (``config.is_encoder_decoder``, e.g. T5): the paper's values, unchanged, so that
  reproducing the paper needs no flag;
* ``encoder`` (BERT-style models with a classification head): ``ENCODER_RATES`` below, measured on
  the demo's model and data (each entry says how; ``benchmarks/learning_rates.py`` measures them
  against ``--lr auto``);
* ``decoder`` (causal LMs: an architecture ``...ForCausalLM`` / ``...LMHeadModel``):
  ``DECODER_RATES``, common practice from the literature, *not measured here*.

A method without an entry in its family's table keeps the paper's value, and the returned
:class:`LearningRateChoice` says so. A learning rate the user gives (``--lr``, or ``learning_rate``
in the method's settings) always wins. ``--lr auto`` (training/search.py) searches :func:`lr_grid`
around the family default.

A classifier's new head learns at a multiple of the method's rate (:func:`head_lr_factor`): 10×
(``HEAD_LR_FACTOR``) unless the family's table measured another for the method
(``ENCODER_HEAD_LR_FACTORS``); ``--head-lr`` always wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..model_anatomy import FAMILIES, model_family  # noqa: F401 (model_family: the family a table is chosen by)

MINILM = "all-MiniLM-L6-v2 + the demo's BBC News split (README, 'Learning rates'; benchmarks/learning_rates.py)"


@dataclass(frozen=True)
class Rate:
    value: float
    source: str


def _quality(seeds: str) -> str:
    return ("the quality benchmark's validation scores (benchmarks/quality.py; README, 'Quality over datasets and "
            f"seeds'): all-MiniLM-L6-v2 on 3 real-text corpora, {seeds}")


QUALITY, QUALITY_SEEDS = _quality("seed 0"), _quality("seeds 0, 1 and 2")


def _scores(by_rate: str) -> str:
    return f"mean validation score over the corpora, the whole training set's and 100 examples' averaged, {by_rate}"


# BERT-style encoders, measured on the demo's model: full fine-tuning and Compacter++ on the demo's data
# (benchmarks/learning_rates.py), held by the quality benchmark; the others chosen by the quality benchmark. All with
# the new head at 10× the method's rate, its default until 2026-12-06 (ENCODER_HEAD_LR_FACTORS below); the grids of
# the six methods whose head moved ran again on 3 seeds at the head's 3×: five kept their rates, (IA)³'s moved down.
ENCODER_RATES: dict[str, Rate] = {
    "full": Rate(1e-4, f"measured on {MINILM}: test accuracy 98.2 at 1e-4 against 97.7 at the paper's 3e-4 "
                       "(whole training set), 93.0 against 92.8 (100 examples)"),
    "compacter++": Rate(3e-3, f"the paper's value, which held on {MINILM}: test accuracy 97.1 at 3e-3 (whole "
                              "training set; 96.9 at 1e-3, 97.3 at 1e-2), 93.4 (100 examples; 93.2 at 1e-3); held by "
                              f"{QUALITY_SEEDS} with the head at 3×, "
                              f"{_scores('1e-2: 77.0, 3e-3: 77.5, 1e-3: 75.9')} (highest on each seed)"),
    "compacter": Rate(3e-3, f"chosen on {QUALITY}: {_scores('3e-3: 74.7, 1e-2: 73.7, 1e-3: 73.0, 3e-4: 64.0')} "
                            "(on BBC News alone, one seed, benchmarks/learning_rates.py had preferred 1e-3 with 100 "
                            f"examples); held by {QUALITY_SEEDS} with the head at 3×, "
                            f"{_scores('1e-2: 77.0, 3e-3: 77.3, 1e-3: 75.9')}"),
    # The other methods had the paper's (T5) rates, too low on this encoder. Each pick below is bracketed: the rate
    # above it and the one below score lower (by 0.1 to 10 points), with both poolings averaged: one encoder default
    # serves the checkpoints that mean-pool and the BERT classifiers that read [CLS]. Adapter and the linear probe,
    # first picked on [CLS] pooling and seed 0, moved one step down on 3 seeds of mean pooling.
    "adapter": Rate(1e-3, f"chosen on {QUALITY_SEEDS}: with mean pooling, the checkpoint's, "
                          f"{_scores('1e-2: 76.6, 3e-3: 78.1, 1e-3: 78.7')} (higher on each seed; the whole sets "
                          "alone prefer 3e-3, 85.5 against 84.9); with [CLS] pooling (seed 0) 1e-2: 68.3, 3e-3: 78.1, "
                          "1e-3: 77.7, 3e-4 (the paper): 68.4, 1e-4: 51.7 (seeds 0-2: 77.1 at 3e-3, 76.8 at 1e-3); "
                          "over both poolings 1e-3 is higher, by little (78.2 against 78.1 at 3e-3, the default "
                          "until 2026-12-05; 77.7 against 77.6 on 3 seeds of each)"),
    "lora": Rate(3e-3, f"chosen on {QUALITY}: "
                       f"{_scores('1e-2: 74.7, 3e-3: 77.9, 1e-3: 76.6, 3e-4 (its paper): 66.4, 1e-4: 50.4')}; "
                       f"held by {QUALITY_SEEDS} with the head at 3×, {_scores('1e-2: 76.4, 3e-3: 78.9, 1e-3: 78.5')} "
                       "(seed 0 alone preferred 1e-3, by 0.2; seeds 1 and 2 prefer 3e-3)"),
    "ia3": Rate(1e-2, f"chosen on {QUALITY_SEEDS} with the head at 3× and mean pooling, "
                      f"{_scores('1e-1: 75.1, 3e-2: 77.1, 1e-2: 77.4, 3e-3 (its paper): 76.2')} (the whole sets "
                      "prefer 3e-2, 85.5 against 84.4; 100 examples 1e-2, 70.4 against 68.7); with [CLS] pooling "
                      "(seed 0, the head at 10×) 1e-1: 74.3, 3e-2: 75.2, 1e-2: 75.1, 3e-3: 71.7, 1e-3: 67.1; over "
                      "both poolings 1e-2 is higher, by little (76.2 against 76.1 at 3e-2, the default until "
                      "2026-12-06)"),
    "linear-probe": Rate(1e-2, f"chosen on {QUALITY_SEEDS}: with mean pooling, the checkpoint's, "
                               f"{_scores('1e-1: 69.9, 3e-2: 71.3, 1e-2: 72.3, 3e-3: 73.0')}; with [CLS] pooling "
                               "(seed 0) 1e-1: 65.2, 3e-2: 66.1, 1e-2: 65.8, 3e-3 (the paper): 64.3, 1e-3: 61.5; "
                               "over both poolings 1e-2 is the highest (69.1 against 68.7 at 3e-3 and at 3e-2, the "
                               "default until 2026-12-05); held with the head at 3× (mean pooling, 3 seeds): 1e-2 "
                               "73.0, higher than 3e-3 by 0.05 and than 3e-2 (72.7) by 0.4"),
    "layer-norms": Rate(3e-3, f"the paper's value, which held on {QUALITY} with [CLS] pooling: "
                              f"{_scores('3e-3: 75.5, 1e-2: 74.8, 1e-3: 72.8')}; on {QUALITY_SEEDS} with the head "
                              "at 3× and mean pooling 1e-2 is higher (77.4 against 77.0; 1e-3: 75.7), over both "
                              "poolings 3e-3 (76.2 against 76.1)"),
}

# Decoder-only causal LMs: the values practitioners use, from the papers below; not measured here.
DECODER_RATES: dict[str, Rate] = {
    "full": Rate(2e-5, "common practice for full fine-tuning of decoder-only LMs: Stanford Alpaca (LLaMA-7B, "
                       "Taori et al., 2023) and Llama 2's supervised fine-tuning (Touvron et al., 2023) use 2e-5; "
                       "not measured here"),
}

FAMILY_TABLES = {"encoder": ENCODER_RATES, "decoder": DECODER_RATES}

# A new classification head starts from random weights, while the method's learning rate was chosen for pretrained
# weights (and adapters that start as the identity): the head learns at a multiple of the method's rate, 10× unless
# the family's table below measured another for the method. T5-style models have no new head (text to text).
HEAD_LR_FACTOR = 10.0


def _head(by_size: str) -> str:
    return (f"chosen on {QUALITY_SEEDS}: the mean validation score over the corpora with the head at 3× the "
            f"method's rate against 10× (the default until 2026-12-06), {by_size}")


# BERT-style encoders: the head at 3× or 10× the method's rate, chosen on the two sizes' validation scores averaged,
# as a learning rate is. With 100 examples 3× is higher for all seven parameter-efficient methods; on the whole
# training sets it is mixed. Adapter (both sizes averaged: -0.1) and full fine-tuning (-0.5) keep 10×.
ENCODER_HEAD_LR_FACTORS: dict[str, Rate] = {
    "compacter++": Rate(3.0, _head("100 examples 70.9 against 69.6, the whole training set 84.1 against 84.0")),
    "compacter": Rate(3.0, _head("100 examples 70.5 against 69.4, the whole training set 84.1 against 84.4")),
    "lora": Rate(3.0, _head("100 examples 72.5 against 70.6, the whole training set 85.3 against 85.7")),
    "ia3": Rate(3.0, _head("at 3e-2, its rate then, 100 examples 68.7 against 67.3, the whole training set 85.5 "
                           "against 85.5; at 1e-2, its rate since, 70.4 against 68.7 and 84.4 against 84.1")),
    "layer-norms": Rate(3.0, _head("100 examples 70.1 against 69.8, the whole training set 83.9 against 83.7")),
    "linear-probe": Rate(3.0, _head("100 examples 66.9 against 65.9, the whole training set 79.1 against 78.8")),
}
HEAD_LR_FACTOR_TABLES = {"encoder": ENCODER_HEAD_LR_FACTORS}

# Each method's rate on T5-style models: the paper's (SPEC §2); LoRA's and (IA)³'s from their own papers (Hu et al.,
# 2021, on GLUE with RoBERTa and DeBERTa: 2e-4 to 5e-4; Liu et al., 2022: 3e-3). Filled by register_method.
PAPER_RATES: dict[str, float] = {}
FALLBACK_RATE = 3e-4  # a registered method that gave no learning_rate
PAPER_SOURCE = "the paper's value (tuned for T5)"


@dataclass(frozen=True)
class LearningRateChoice:
    """A run's learning rate, the model family it was chosen for, and why (recorded in results.json and the log)."""

    value: float
    family: str | None  # None: the user gave the learning rate
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "family": self.family, "source": self.source}

    def describe(self) -> str:
        return f"{self.value:g}: {self.source}"


def family_default(method: str, family: str) -> LearningRateChoice:
    """The default learning rate of ``method`` on a model of ``family``."""
    paper_rate = PAPER_RATES.get(method, FALLBACK_RATE)
    if family not in FAMILIES:
        raise ValueError(f"Unknown model family {family!r}; the families are {', '.join(FAMILIES)}.")
    if family == "seq2seq":
        return LearningRateChoice(paper_rate, family, f"seq2seq default: {PAPER_SOURCE}")
    rate = FAMILY_TABLES[family].get(method)
    if rate is None:
        return LearningRateChoice(paper_rate, family, f"{family} model, no {family} entry for {method}: "
                                                      f"{PAPER_SOURCE}")
    return LearningRateChoice(rate.value, family, f"{family} default for {method}: {rate.source}")


def head_lr_factor(method: str, family: str) -> float:
    """A new head's learning rate as a multiple of ``method``'s on a model of ``family``."""
    if family not in FAMILIES:
        raise ValueError(f"Unknown model family {family!r}; the families are {', '.join(FAMILIES)}.")
    factor = HEAD_LR_FACTOR_TABLES.get(family, {}).get(method)
    return HEAD_LR_FACTOR if factor is None else factor.value


def lr_grid(center: float) -> list[float]:
    """The learning rates ``--lr auto`` tries: ``center`` × {1/3, 1, 3}, the two neighbours rounded to one
    significant figure (a 9 to the next power of ten), so that a rate on the paper's 1-3-10 ladder (3e-4, 3e-3, …)
    has its ladder neighbours (1e-4, 1e-3) and the grids of neighbouring defaults share their runs."""
    if isinstance(center, bool) or not (isinstance(center, (int, float)) and math.isfinite(center) and center > 0):
        raise ValueError(f"A learning-rate grid needs a finite center > 0, got {center!r}.")
    return sorted({round_rate(center / 3), float(center), round_rate(center * 3)})


def round_rate(value: float) -> float:
    """``value`` to one significant figure; 9e-4 becomes 1e-3 (3e-4 × 3 is the ladder's 1e-3)."""
    mantissa, exponent = f"{value:.0e}".split("e")
    if mantissa == "9":
        return float(f"1e{int(exponent) + 1}")
    return float(f"{mantissa}e{exponent}")
