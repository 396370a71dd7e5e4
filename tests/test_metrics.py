"""Metrics from generated strings against independent computations (SPEC §4)."""

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

from compacter.data import compute_metrics, get_task
from compacter.data.metrics import token_f1


def random_labels(seed, n, k):
    rng = np.random.RandomState(seed)
    return rng.randint(0, k, n), rng.randint(0, k, n)


@pytest.mark.parametrize("seed", range(3))
def test_classification_metrics_match_sklearn(seed):
    gold, predicted = random_labels(seed, 200, 2)
    mrpc = get_task("mrpc")
    result = compute_metrics(mrpc, [mrpc.labels[p] for p in predicted], [{"label": g} for g in gold])
    assert result["f1"] == pytest.approx(100 * f1_score(gold, predicted))
    assert result["accuracy"] == pytest.approx(100 * np.mean(gold == predicted))
    assert result["score"] == pytest.approx((result["f1"] + result["accuracy"]) / 2) and result["invalid"] == 0
    cola = get_task("cola")
    result = compute_metrics(cola, [cola.labels[p] for p in predicted], [{"label": g} for g in gold])
    assert result["matthews_correlation"] == pytest.approx(100 * matthews_corrcoef(gold, predicted))
    gold, predicted = random_labels(seed, 100, 3)
    cb = get_task("cb")
    result = compute_metrics(cb, [cb.labels[p] for p in predicted], [{"label": g} for g in gold])
    assert result["f1_macro"] == pytest.approx(100 * f1_score(gold, predicted, average="macro"))


def test_stsb_correlations_match_scipy():
    rng = np.random.RandomState(0)
    gold = rng.uniform(0, 5, 50)
    predicted = np.round(gold + rng.normal(0, 1, 50), 1)
    result = compute_metrics(get_task("stsb"), [str(p) for p in predicted], [{"label": g} for g in gold])
    assert result["pearson"] == pytest.approx(100 * pearsonr(predicted, gold)[0])
    assert result["spearman"] == pytest.approx(100 * spearmanr(predicted, gold)[0])


def test_invalid_predictions_count_as_wrong_and_never_raise():
    rte = get_task("rte")
    examples = [{"label": 0}, {"label": 1}, {"label": 0}, {"label": 1}]
    result = compute_metrics(rte, ["entailment", "banana", "", "not_entailment"], examples)
    assert result["accuracy"] == 50.0 and result["invalid"] == 2
    mrpc = get_task("mrpc")
    # gold positive + invalid = a false negative; gold negative + invalid = a false positive
    result = compute_metrics(mrpc, ["equivalent", "???", "???"], [{"label": 1}, {"label": 1}, {"label": 0}])
    assert result["f1"] == pytest.approx(100 * f1_score([1, 1, 0], [1, 0, 1]))
    stsb = compute_metrics(get_task("stsb"), ["1.0", "two", "4.0", "nan"],
                           [{"label": 1.0}, {"label": 2.0}, {"label": 4.0}, {"label": 3.0}])
    assert stsb["invalid"] == 2
    assert stsb["pearson"] == pytest.approx(100 * pearsonr([1.0, -1.0, 4.0, -1.0], [1, 2, 4, 3])[0])
    cb = compute_metrics(get_task("cb"), ["maybe"], [{"label": 2}])
    assert cb["accuracy"] == 0.0 and cb["invalid"] == 1
    with pytest.raises(ValueError, match="2 predictions for 1 examples"):
        compute_metrics(rte, ["entailment", "entailment"], [{"label": 0}])


def test_multirc_exact_match_per_question_and_f1_over_answers():
    multirc = get_task("multirc")
    def ex(question, answer, label):
        return {"idx": {"paragraph": 0, "question": question, "answer": answer}, "label": label}
    examples = [ex(0, 0, 1), ex(0, 1, 0), ex(1, 0, 1), ex(1, 1, 1), ex(2, 0, 0)]
    predictions = ["True", "False", "True", "False", "False"]
    result = compute_metrics(multirc, predictions, examples)
    # question 0: both right; question 1: one wrong; question 2: right → EM 2/3
    assert result["exact_match"] == pytest.approx(100 * 2 / 3)
    # answers: TP=2 (q0a0, q1a0), FN=1 (q1a1), FP=0 → F1a = 2·2/(2·2+1)
    assert result["f1a"] == pytest.approx(100 * 4 / 5)


def test_record_takes_the_best_gold_answer():
    record = get_task("record")
    examples = [{"answers": ["Barack Obama", "Obama"]}, {"answers": ["the United States"]}, {"answers": ["Paris"]}]
    result = compute_metrics(record, ["obama", "United States of America", ""], examples)
    assert result["exact_match"] == pytest.approx(100 / 3)  # "obama" matches "Obama" after normalisation
    # second: pred tokens [united, states, of, america], gold [united, states]: P=2/4, R=1 → F1 = 2/3
    assert result["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0) / 3)
    assert result["invalid"] == 1
    assert token_f1("The cat sat.", "cat sat") == 1.0
