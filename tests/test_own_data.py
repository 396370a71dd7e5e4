"""Your own data, end to end: train on a CSV, then `evaluate`, `data show`, `predict` and `score` the run."""

import json

import matplotlib.image
import pytest
from conftest import write_tiny_pretrained
from glue_fixtures import write_benchmarks
from training_fixtures import corpus, sentiment_rows, write_csv, write_splits

from compacter.cli import main
from compacter.data.labelled import Columns, read_labelled
from compacter.data.loading import DataFileError
from compacter.data.tasks import Task


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("own-data")
    data = write_splits(root / "reviews", train=60, validation=12, test=23)
    return {"root": root, "data": data, "bert": write_tiny_pretrained(root / "bert", "bert", corpus()),
            "t5": write_tiny_pretrained(root / "t5", "t5", corpus())}


@pytest.fixture(scope="module")
def run(workspace):
    """A short run on the reviews: a test score between chance and perfect, so that equal scores say something."""
    output = workspace["root"] / "run"
    code = main(["train", "--model", str(workspace["bert"]), "--task", str(workspace["data"]), "--text-column",
                 "review", "--label-column", "sentiment", "--epochs", "1", "--batch-size", "8", "--lr", "1e-3",
                 "--eval-batch-size", "5", "--output-dir", str(output)])
    assert code == 0
    return output, json.loads((output / "results.json").read_text())


def evaluated(*argv, capsys) -> dict:
    capsys.readouterr()
    assert main(["evaluate", *argv]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_evaluate_on_the_runs_test_file_gives_its_recorded_test_score(workspace, run, tmp_path, capsys):
    output, results = run
    assert 50.0 < results["test"]["accuracy"] < 100.0, results["test"]  # a score that can come out otherwise
    summary = evaluated("--run", str(output), "--input", str(workspace["data"] / "test.csv"), capsys=capsys)
    reports = output / "evaluation-test"
    assert summary["output"] == str(reports)
    record = json.loads((reports / "evaluation.json").read_text())
    assert record["metrics"] == results["test"]  # exactly, every metric
    counts = record["confusion_matrix"]["counts"]
    assert record["confusion_matrix"]["labels"] == ["negative", "positive"]
    assert sum(map(sum, counts)) == 23 and [sum(row) for row in counts] == [12, 11]  # rows: the true labels
    assert 100.0 * (counts[0][0] + counts[1][1]) / 23 == pytest.approx(results["test"]["accuracy"])
    table = (reports / "evaluation.md").read_text()
    assert f"| accuracy | {results['test']['accuracy']:.2f} |" in table and "| negative | " in table
    image = matplotlib.image.imread(reports / "confusion_matrix.png")
    assert image.ndim == 3 and image.shape[0] > 100
    assert len((reports / "predictions.jsonl").read_text().splitlines()) == 23
    # the run's own test split (no --input), and the adapter on its base with the file's columns named
    own = evaluated("--run", str(output), "--output", str(tmp_path / "own"), capsys=capsys)
    assert json.loads((tmp_path / "own" / "evaluation.json").read_text())["metrics"] == results["test"]
    assert own["accuracy"] == round(results["test"]["accuracy"], 2)
    evaluated("--adapter", str(output / "adapter"), "--model", str(workspace["bert"]), "--input",
              str(workspace["data"]), "--label-column", "sentiment", "--batch-size", "5", "--output",
              str(tmp_path / "adapter"), capsys=capsys)
    assert json.loads((tmp_path / "adapter" / "evaluation.json").read_text())["metrics"] == results["test"]


def test_score_on_predicts_output_gives_the_same(workspace, run, tmp_path, capsys):
    output, results = run
    exported, predictions = tmp_path / "test.jsonl", tmp_path / "predictions.jsonl"
    assert main(["data", "show", "--task", str(output), "--export", str(exported)]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "train 60 examples validation 12 examples test 23 examples" in shown
    assert main(["predict", "--run", str(output), "--input", str(exported), "--output", str(predictions),
                 "--batch-size", "5"]) == 0
    for task, references, columns in [(output, exported, []), (output, workspace["data"] / "test.csv", []),
                                      (workspace["data"], workspace["data"] / "test.csv",
                                       ["--text-column", "review", "--label-column", "sentiment"])]:
        capsys.readouterr()
        assert main(["score", "--task", str(task), "--predictions", str(predictions), "--references", str(references),
                     *columns]) == 0, capsys.readouterr().err
        assert json.loads(capsys.readouterr().out) == results["test"]


def test_data_show_reads_your_file_with_its_columns(workspace, capsys):
    assert main(["data", "show", "--task", str(workspace["data"]), "--text-column", "review", "--label-column",
                 "sentiment", "--examples", "1"]) == 0
    out = capsys.readouterr().out
    words = " ".join(out.split())
    assert out.startswith("reviews (custom), source: ") and "train 60 examples validation 12 examples test 23" in words
    assert main(["data", "show", "--task", "topic"]) == 2
    assert "Unknown task 'topic'" in capsys.readouterr().err


def test_text_to_text_runs_are_scored_by_exact_match(workspace, tmp_path, capsys):
    data = tmp_path / "qa"
    rows = [{"question": r["review"], "answer": r["sentiment"]} for r in sentiment_rows(40)]
    write_csv(data / "train.csv", rows[:24])
    write_csv(data / "validation.csv", rows[24:32])
    write_csv(data / "test.csv", rows[32:])
    output = tmp_path / "run"
    assert main(["train", "--model", str(workspace["t5"]), "--task", str(data), "--source-column", "question",
                 "--target-column", "answer", "--epochs", "1", "--batch-size", "8", "--lr", "3e-2",
                 "--output-dir", str(output)]) == 0
    results = json.loads((output / "results.json").read_text())
    assert set(results["test"]) == {"exact_match", "f1", "score", "invalid", "n"}
    evaluated("--run", str(output), "--input", str(data / "test.csv"), capsys=capsys)
    record = json.loads((output / "evaluation-test" / "evaluation.json").read_text())
    assert record["metrics"] == results["test"] and record["confusion_matrix"] is None
    assert not (output / "evaluation-test" / "confusion_matrix.png").exists()
    predictions = output / "evaluation-test" / "predictions.jsonl"
    assert main(["score", "--task", str(output), "--predictions", str(predictions), "--references",
                 str(data / "test.csv")]) == 0
    assert json.loads(capsys.readouterr().out) == results["test"]


PAIRS = Task("pairs", "custom", "", ("premise", "hypothesis"), ("no", "yes"), ("accuracy",),
             classification_fields=("premise", "hypothesis"))
ANSWERS = Task("answers", "custom", "", ("question",), None, ("exact_match",), template_name="passthrough")


@pytest.mark.parametrize("task, columns, role", [
    (PAIRS, Columns(("premise", "second"), "label"), "text-pair"),
    (PAIRS, Columns(("first", "hypothesis"), "label"), "text"),
    (ANSWERS, Columns(("query",), "answer"), "source"),
    (ANSWERS, Columns(("question",), "reply"), "target"),
])
def test_a_labelled_file_without_a_column_names_the_option_for_it(task, columns, role, tmp_path):
    path = write_csv(tmp_path / "labelled.csv", [{"premise": "a", "hypothesis": "b", "question": "c", "answer": "d",
                                                  "label": "yes"}])
    missing = next(column for column in (*columns.fields, columns.label) if column not in ("premise", "hypothesis",
                                                                                              "question", "answer"))
    with pytest.raises(DataFileError, match=f"no {role} column '{missing}'; .* Name the column with --{role}-column"):
        read_labelled(path, task, columns)


@pytest.mark.parametrize("rows,flags,message", [
    ([{"review": "good alpha", "stars": "positive"}], [], "no label column 'sentiment'; its columns are ['review', "
                                                           "'stars']. Name the column with --label-column"),
    ([{"review": "good alpha", "sentiment": "neutral"}, {"review": "bad beta", "sentiment": "mixed"}], [],
     "label(s) ['mixed', 'neutral'] (2 row(s)) are not labels of the task 'reviews', whose labels are ['negative', "
     "'positive']"),
    ([{"review": "good alpha", "sentiment": "positive"}], ["--adapter", "ADAPTER"],
     "Say what to evaluate: --run RUN_DIR"),
])
def test_bad_evaluate_input_is_refused_before_anything_is_written(rows, flags, message, run, tmp_path, capsys):
    output, _ = run
    flags = [str(output / "adapter") if flag == "ADAPTER" else flag for flag in flags]
    path = write_csv(tmp_path / "labelled.csv", rows)
    reports = tmp_path / "reports"
    assert main(["evaluate", "--run", str(output), "--input", str(path), "--output", str(reports), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not reports.exists()


def test_a_glue_run_is_evaluated_on_its_exported_examples_with_the_tasks_metrics(workspace, tmp_path, capsys):
    glue = write_benchmarks(tmp_path / "glue")
    output = tmp_path / "rte"
    assert main(["train", "--model", str(workspace["t5"]), "--task", "rte", "--data-dir", str(glue), "--epochs", "1",
                 "--batch-size", "8", "--lr", "3e-2", "--output-dir", str(output)]) == 0
    results = json.loads((output / "results.json").read_text())
    assert results["schedule"]["warmup_steps"] == 4  # the paper's 500 for GLUE on (a tiny) T5, ended before the end
    exported = tmp_path / "rte-test.jsonl"
    assert main(["data", "show", "--task", "rte", "--data-dir", str(glue), "--export", str(exported)]) == 0
    evaluated("--run", str(output), "--input", str(exported), capsys=capsys)
    record = json.loads((output / "evaluation-rte-test" / "evaluation.json").read_text())
    assert record["metrics"] == results["test"] and set(record["metrics"]) == {"accuracy", "score", "invalid", "n"}
    assert record["confusion_matrix"]["labels"][:2] == ["entailment", "not_entailment"]
    capsys.readouterr()
    assert main(["evaluate", "--run", str(output), "--input", str(workspace["data"] / "test.csv"), "--output",
                 str(tmp_path / "never")]) == 2
    assert "rte examples are read from a hub export (JSON lines or parquet" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
