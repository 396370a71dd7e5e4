"""`compacter score` files (data/scoring.py), sweep files (experiments/sweep.py) and report folders at their boundary."""

import json
import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compacter.cli import main
from compacter.data import get_task
from compacter.data.scoring import read_predictions, read_references, score_files
from compacter.experiments import expand, read_sweep

RTE = get_task("rte")


def lines(*rows) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def score(tmp_path, capsys, predictions: str, references: str, task="rte"):
    (tmp_path / "p.jsonl").write_text(predictions, encoding="utf-8")
    (tmp_path / "r.jsonl").write_text(references, encoding="utf-8")
    code = main(["score", "--task", task, "--predictions", str(tmp_path / "p.jsonl"), "--references",
                 str(tmp_path / "r.jsonl")])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else captured.err.strip())


GOLD = lines({"label": 0}, {"label": 1}, {"label": 1})


@pytest.mark.parametrize("task,predictions,references,message", [
    ("rte", lines({"prediction": 1}, "entailment", "entailment"), GOLD,
     'p.jsonl, line 1: a prediction must be the generated text (a label of rte: entailment, not_entailment), got 1'),
    ("rte", lines({"text": "entailment"}, "x", "y"), GOLD, 'p.jsonl, line 1: no "prediction" key (the line has '
                                                           "['text']); write each prediction as \"text\" or"),
    ("rte", lines(None, "x", "y"), GOLD, "p.jsonl, line 1: a prediction must be the generated text"),
    ("rte", lines("x", "y", "z"), lines({"label": 0}, {"label": 5}, {"label": 1}),
     r"r.jsonl, line 2: label 5 is not a rte label; its labels are ['entailment', 'not_entailment'] or their ids 0..1."),
    ("rte", lines("x", "y", "z"), lines({"label": 0}, {"label": True}, {"label": 1}), "r.jsonl, line 2: label true is not"),
    ("rte", lines("x", "y", "z"), lines({"label": 0}, {"label": -1}, {"label": 1}), "r.jsonl, line 2: label -1 is not"),
    ("rte", lines("x", "y", "z"), lines({"label": 0}, {"target": "maybe"}, {"label": 1}),
     "r.jsonl, line 2: target \"maybe\" is not a rte label; its labels are ['entailment', 'not_entailment']."),
    ("rte", lines("x", "y", "z"), lines({"label": 0}, {"sentence1": "a"}, {"label": 1}),
     "r.jsonl, line 2: a reference needs \"label\" (an example from `compacter data show --export`) or \"target\""),
    ("rte", lines("x", "y", "z"), lines({"label": 0}, 7, {"label": 1}), "r.jsonl, line 2: a reference must be an example"),
    ("rte", lines("x", "y"), GOLD, "p.jsonl has 2 predictions and .*r.jsonl has 3 references; they pair up line by line"),
    ("rte", "", GOLD, "The predictions file .*p.jsonl is empty"),
    ("rte", "\n \n", GOLD, "The predictions file .*p.jsonl is empty"),
    ("rte", lines("x") + "{oops\n", GOLD, "p.jsonl, line 2: the predictions file must be JSON lines"),
    ("stsb", lines("1.0", "2.0", "3.0"), lines({"label": 1.0}, {"label": 7.5}, {"label": 2.0}),
     "r.jsonl, line 2: label 7.5 is not an stsb score (a number from 0 to 5)."),
    ("stsb", lines("1.0", "2.0", "3.0"), lines({"label": 1.0}, {"target": "abc"}, {"label": 2.0}),
     'r.jsonl, line 2: target "abc" is not an stsb score'),
    ("stsb", lines("1.0", [2.0], "3.0"), lines({"label": 1.0}, {"label": 2.0}, {"label": 3.0}),
     "p.jsonl, line 2: a prediction must be the generated text or a number, got [2.0]"),
    ("stsb", lines("1.0", "2.0", "3.0") , '{"label": 1.0}\n{"label": NaN}\n{"label": 2.0}\n',
         "r.jsonl, line 2: the references file must be JSON lines: NaN is not a JSON number"),
    ("record", lines("a"), lines({"target": "a"}), "record references need the full examples"),
    ("record", lines("a"), lines({"answers": "a"}), 'a record reference needs "answers", a list of texts'),
    ("multirc", lines("True"), lines({"label": 1}), 'a multirc reference needs "idx" with its paragraph and question'),
])
def test_bad_score_files_are_refused_naming_the_file_and_line(task, predictions, references, message, tmp_path, capsys):
    code, error = score(tmp_path, capsys, predictions, references, task)
    assert code == 2 and re.search(re.escape(message) if "*" not in message else message, error), error


def test_references_in_every_accepted_form_score_alike(tmp_path, capsys):
    predictions = lines("entailment", {"prediction": "not_entailment"}, "gibberish")
    forms = [GOLD, lines({"target": "entailment"}, {"target": " not_entailment "}, {"target": "not_entailment"}),
             lines("entailment", "not_entailment", "not_entailment"),
             lines({"label": "entailment"}, {"label": 1}, {"label": "not_entailment"}),
             "\ufeff" + GOLD]  # a byte-order mark
    results = [score(tmp_path, capsys, predictions, form) for form in forms]
    assert all(code == 0 for code, _ in results) and len({json.dumps(r) for _, r in results}) == 1
    assert results[0][1]["accuracy"] == pytest.approx(200 / 3) and results[0][1]["invalid"] == 1


def test_stsb_takes_numbers_and_json_text_may_hold_line_separators(tmp_path, capsys):
    code, result = score(tmp_path, capsys, lines(1.0, "2.5", {"prediction": 4}), lines({"label": 1}, {"label": 2.4},
                                                                                       {"label": 4.2}), "stsb")
    assert code == 0 and result["invalid"] == 0 and result["pearson"] > 99
    raw = '{"prediction": "entail\u2028ment"}\n"x"\n"y"\n'  # U+2028 unescaped inside a JSON string: still one line
    code, result = score(tmp_path, capsys, raw, GOLD)
    assert code == 0 and result["n"] == 3 and result["invalid"] == 3


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                                  lambda inner: st.lists(inner, max_size=2) | st.dictionaries(
                                      st.sampled_from(["label", "target", "prediction", "idx", "answers", "x"]), inner,
                                      max_size=3), max_leaves=5), min_size=1, max_size=4),
       task=st.sampled_from(["rte", "stsb", "multirc", "record", "cb"]))
def test_any_json_lines_are_read_or_refused_with_a_message(rows, task, tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    for read in (read_predictions, read_references):
        try:
            read(path, get_task(task))
        except ValueError as error:
            assert str(path) in str(error)
    try:
        score_files(get_task(task), path, path)
    except ValueError as error:
        assert str(error)


BASE = {"models": ["t5-small"], "tasks": ["rte"], "methods": ["compacter"]}


@pytest.mark.parametrize("text,message", [
    ("models: [t5-small]\ntasks: [rte]\nmethods: compacter\n",
     "methods must be a non-empty list of non-empty texts (e.g. [a, b]), got 'compacter' (text)."),
    ({**BASE, "settings": {"bogus": 1}}, "settings: 'bogus' is not a setting of `compacter train`; the settings are"),
    ({**BASE, "settings": {"learning_rate": 1e-3}}, "settings: 'learning_rate' is set by the grid; list it under "
                                                    "learning_rates."),
    ({**BASE, "learning_rates": ["fast"]}, "learning_rates must be a non-empty list of finite numbers > 0"),
    ({**BASE, "learning_rates": []}, "learning_rates must be a non-empty list"),
    ({**BASE, "seeds": 42}, "seeds must be a non-empty list of whole numbers ≥ 0 and ≤ 4294967295 (e.g. [0, 1]), got 42"),
    ({**BASE, "seeds": [1.5]}, "seeds must be a non-empty list of whole numbers"),
    ({**BASE, "train_sizes": [0]}, "train_sizes must be a non-empty list of whole numbers ≥ 1 or none"),
    ({**BASE, "methods": ["compacter", "compacter"]}, "methods lists 'compacter' twice; list each entry once."),
    ({**BASE, "methods": ["compactor"]}, "Unknown method 'compactor'. Did you mean 'compacter'?"),
    ({**BASE, "tasks": ["rtee"]}, "Unknown task 'rtee'"),
    ({**BASE, "settings": {"epochs": 0}}, "epochs must be a whole number ≥ 1 or none, got 0."),
    ({**BASE, "settings": {"method_overrides": {"n": "4"}}}, "method 'compacter': n must be a whole number ≥ 1, got '4'"),
    ({**BASE, "settings": "epochs=3"}, "settings must be a mapping of names to values, got 'epochs=3' (text)."),
    # (a learning rate given: the default one would need the hub models' configs)
    ({**BASE, "models": ["a/t5-small", "b/t5-small"], "learning_rates": [3e-3]}, "two runs would share the folder"),
    ({**BASE, "output_dir": ""}, "output_dir must be non-empty text"),
    ({**BASE, "learning_rate": [1e-3]}, r"unknown key(s) ['learning_rate']; a sweep has"),
    ({"models": ["t5-small"], "methods": ["compacter"]}, "'tasks' must list at least one entry, e.g. tasks: [...]."),
    ({**BASE, "tasks": []}, "tasks must be a non-empty list"),
    ("models: [t5-small]\nmodels: [t5-base]\ntasks: [rte]\nmethods: [compacter]\n", "the key 'models' is given twice"),
    ("- models\n", "must be a mapping of keys to values"),
    ("", "'models' must list at least one entry"),
    ("models: [t5-small\n", "is not valid YAML"),
])
def test_bad_sweep_files_are_refused_before_any_run(text, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "sweep.yaml"
    path.write_text(text if isinstance(text, str) else yaml.safe_dump(text))
    code = main(["sweep", str(path)])
    error = capsys.readouterr().err
    assert code == 2 and message in error, error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]  # no runs/ folder


def test_sweep_numbers_read_the_json_way(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("models: [t5-small]\ntasks: [rte]\nmethods: [compacter]\nlearning_rates: [3e-3, 1E-4, 0.1]\n"
                    f"output_dir: {tmp_path / 'runs'}\n")
    sweep = read_sweep(path)
    assert sweep.learning_rates == [3e-3, 1e-4, 0.1] and sweep.seeds == [42] and sweep.train_sizes == [None]
    assert [config.learning_rate for config in expand(sweep)] == [3e-3, 1e-4, 0.1]


def test_report_names_a_results_file_it_cannot_read(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text('{"model": "x"}')
    assert main(["report", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "run/results.json is not a results file of `compacter train` (it lacks 'config')" in error
    assert not (tmp_path / "report").exists()


def test_report_of_a_missing_folder_says_so(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "nowhere is not a folder; give the folder that holds the runs" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
