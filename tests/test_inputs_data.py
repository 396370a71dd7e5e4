"""Data files at their boundary (data/files.py, data/loading.py): refused with the file and row, or read as written."""

import csv
import json
import re
import warnings
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from glue_fixtures import write_benchmarks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compacter.cli import main
from compacter.cli_train import TRAIN_OPTIONS
from compacter.data import load_task
from compacter.data.files import load_files
from compacter.data.loading import DataFileError

ROWS = "".join(f"text {i},{'positive' if i % 2 else 'negative'}\n" for i in range(20))
COLUMNS = {"text_column": "text", "label_column": "label"}


def write(folder, files: dict):
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return folder


@pytest.mark.parametrize("files,target,message", [
    ({"d.csv": "text,label,label\n" + ROWS}, "d.csv", "d.csv has 2 columns named 'label'; which one is meant cannot be"),
    ({"d.tsv": "text\ttext\tlabel\na\tb\tx\n"}, "d.tsv", "d.tsv has 2 columns named 'text'"),
    ({"d/train.csv": "text,label\n" + ROWS, "d/train.jsonl": '{"text": "a", "label": "x"}\n'}, "d",
     r"has 2 train files \(train.csv, train.jsonl\); keep one of them"),
    ({"d/train.csv": "text,label\n" + ROWS, "d/dev.csv": "text,label\na,positive\n",
      "d/validation.csv": "text,label\na,positive\n"}, "d", r"has 2 validation files \(dev.csv, validation.csv\)"),
    ({"d/train.csv": "text,label\n" + ROWS, "d/test.csv": "text,label\na,positive\nb,neutral\nc,neutral\n"}, "d",
     r"test.csv: label\(s\) \['neutral'\] \(2 row\(s\)\) appear in no example of train.csv, so a classifier could "
     r"never predict them"),
    ({"d/train.csv": "text,label\n" + ROWS, "d/validation.csv": "text,label\na,Positive\n"}, "d",
     r"validation.csv: label\(s\) \['Positive'\]"),
    ({"d.csv": "text,label\n" + ROWS + "   ,positive\n"}, "d.csv", r"column 'text' is empty in 1 row\(s\), the first being "
     "data row 21"),
    ({"d.csv": "text,label\n" + ROWS + "a,positive,extra\n"}, "d.csv", "d.csv: line 22 has 3 fields and the header has 2 "
     "columns; quote the fields that contain a comma"),
    ({"d.csv": "text,label\na,x,extra\nb,y\n"}, "d.csv", "a row has more fields than the header has 2 columns"),
    ({"d.csv": "text,label\n" + ROWS + "short\n"}, "d.csv", "column 'label' is empty in 1 row"),
    ({"d.csv": "text,label\ncaf\xe9,x\n".encode("latin-1")}, "d.csv", r"d.csv, line 2 is not UTF-8 text .*; save it as "
                                                                       "UTF-8"),
    ({"d.csv": ""}, "d.csv", "d.csv is empty: it has no examples"),
    ({"d.csv": "text,label\n"}, "d.csv", "d.csv is empty: it has no examples"),
    ({"d.csv": "text,label\na,x\nb,x\n"}, "d.csv", r"column 'label' has 1 distinct label\(s\); classification needs at "
     "least 2"),
    ({"d.jsonl": '{"text": "a", "label": "x", "label": "y"}\n'}, "d.jsonl", "d.jsonl, line 1: the key 'label' appears "
     "twice in one object"),
    ({"d.jsonl": '{"text": "a", "label": "x"}\n[1, 2]\n'}, "d.jsonl", "d.jsonl, line 2: expected a JSON object, got list"),
    ({"d.jsonl": '{"text": "a", "label": "x"}\n\n{oops\n'}, "d.jsonl", r"d.jsonl, line 3: not valid JSON"),
    ({"d.json": '[{"text": "a", "label": "x"}, 3]'}, "d.json", "d.json, item 2: expected a JSON object, got int"),
    ({"d.jsonl": '{"text": ["a"], "label": "x"}\n'}, "d.jsonl", "column 'text' holds a list in data row 1"),
    ({"d.jsonl": '{"text": "a", "label": null}\n{"text": "b", "label": "y"}\n'}, "d.jsonl", "column 'label' is empty"),
    ({"d.csv": "sentence,label\n" + ROWS}, "d.csv", r"no text column 'text'; its columns are \['sentence', 'label'\]"),
    ({"d.parquet": b"not parquet"}, "d.parquet", r"d.parquet: could not be read as .parquet"),
])
def test_bad_data_files_are_refused_naming_the_file_and_row(files, target, message, tmp_path):
    write(tmp_path, files)
    with pytest.raises(DataFileError, match=message):
        load_files(tmp_path / target, **COLUMNS)


@pytest.mark.parametrize("columns,message", [
    ({"text_column": "text", "label_column": "label", "source_column": "text", "target_column": "label"},
     "Give either --source-column and --target-column .* or --text-column and --label-column .*, not both"),
    ({"text_column": "text", "label_column": "text"}, "The column 'text' is given for two roles"),
    ({"text_column": "text", "text_pair_column": "text", "label_column": "label"}, "The column 'text' is given for two"),
    ({"source_column": "text"}, "Give both --source-column and --target-column"),
    ({"text_column": "text"}, "Say which columns of .* to use"),
])
def test_column_choices_that_cannot_be_meant_are_refused(columns, message, tmp_path):
    write(tmp_path, {"d.csv": "text,label\n" + ROWS})
    with pytest.raises(ValueError, match=message):
        load_files(tmp_path / "d.csv", **columns)


@pytest.mark.parametrize("columns, role", [
    ({"text_column": "body", "label_column": "label"}, "text"),
    ({"text_column": "text", "text_pair_column": "second", "label_column": "label"}, "text-pair"),
    ({"text_column": "text", "label_column": "topic"}, "label"),
    ({"source_column": "question", "target_column": "label"}, "source"),
    ({"source_column": "text", "target_column": "answer"}, "target"),
])
def test_a_missing_column_is_named_with_the_option_that_sets_it(columns, role, tmp_path):
    write(tmp_path, {"d.csv": "text,label\n" + ROWS})
    missing = next(column for column in columns.values() if column not in ("text", "label"))
    with pytest.raises(DataFileError) as error:
        load_files(tmp_path / "d.csv", **columns)
    option = f"--{role}-column"
    assert f"no {role} column {missing!r}" in str(error.value) and f"Name the column with {option}" in str(error.value)
    assert TRAIN_OPTIONS[option][0] == option[2:].replace("-", "_")  # the option `compacter train` has for it


def test_duplicate_parquet_columns_are_refused(tmp_path):
    table = pa.Table.from_arrays([pa.array(["a", "b"]), pa.array(["x", "y"]), pa.array(["y", "x"])],
                                 names=["text", "label", "label"])
    pq.write_table(table, tmp_path / "d.parquet")
    with pytest.raises(DataFileError, match="d.parquet has 2 columns named 'label'"):
        load_files(tmp_path / "d.parquet", **COLUMNS)


def examples(task, splits) -> Counter:
    return Counter((e["text"], task.labels[e["label"]]) for rows in splits.values() for e in rows)


def test_cells_are_read_as_written(tmp_path):
    """A byte-order mark is not part of the first column's name; "NA", "null", "None" and "007" are text."""
    rows = [("NA", "x"), ("null", "y"), ("None", "x"), ("007", "y"), (" spaced ", "x"), ("a, b", "y")] * 3
    with open(tmp_path / "d.csv", "w", encoding="utf-8-sig", newline="") as handle:
        csv.writer(handle).writerows([("text", "label"), *rows])
    task, splits = load_files(tmp_path / "d.csv", **COLUMNS)
    assert task.labels == ("x", "y") and examples(task, splits) == Counter(rows)
    write(tmp_path, {"d.jsonl": "\ufeff" + "".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in rows)})
    task, splits = load_files(tmp_path / "d.jsonl", **COLUMNS)
    assert examples(task, splits) == Counter(rows)
    write(tmp_path, {"d.json": json.dumps([{"text": t, "label": label} for t, label in rows])})
    assert examples(*load_files(tmp_path / "d.json", **COLUMNS)) == Counter(rows)


def test_numeric_labels_of_one_class_are_one_label(tmp_path):
    """JSON writers put 1.0 for 1 once a column has a gap: both are the label "1"."""
    lines = [{"text": f"t{i}", "label": [0, 1.0, 1, 0.0][i % 4]} for i in range(20)]
    write(tmp_path, {"d.jsonl": "".join(json.dumps(line) + "\n" for line in lines)})
    task, splits = load_files(tmp_path / "d.jsonl", **COLUMNS)
    assert task.labels == ("0", "1") and sum(len(rows) for rows in splits.values()) == 20


def test_labels_with_spaces_are_one_class_with_a_warning(tmp_path):
    write(tmp_path, {"d/train.csv": "text,label\n" + ROWS, "d/test.csv": "text,label\na, positive\nb,negative \n",
                     "d/validation.csv": "text,label\nc,positive\nd,negative\n"})
    with pytest.warns(UserWarning, match=r"Column 'label': 2 label\(s\) had spaces around them \(e.g. ' positive'\); "
                                         "they were removed"):
        task, splits = load_files(tmp_path / "d", **COLUMNS)
    assert task.labels == ("negative", "positive")
    assert [(e["text"], task.labels[e["label"]]) for e in splits["test"]] == [("a", "positive"), ("b", "negative")]


CELL = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\x00"), max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(CELL, CELL), min_size=1, max_size=12), suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]))
def test_whatever_is_written_is_read_back_or_refused_with_a_message(rows, suffix, tmp_path):
    path = tmp_path / f"d{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in rows), encoding="utf-8")
    else:
        with open(path, "w", encoding="utf-8", newline="") as handle:
            csv.writer(handle, delimiter="\t" if suffix == ".tsv" else ",").writerows([("text", "label"), *rows])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            task, splits = load_files(path, **COLUMNS)
    except ValueError as error:  # DataFileError is one
        assert str(path) in str(error) or "training examples are too few" in str(error)
        return
    assert examples(task, splits) == Counter((t, label.strip()) for t, label in rows)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=200), suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".json", ".parquet"]))
def test_arbitrary_bytes_never_raise_anything_but_a_value_error(content, suffix, tmp_path):
    path = tmp_path / f"d{suffix}"
    path.write_bytes(content)
    try:
        load_files(path, **COLUMNS)
    except ValueError as error:
        assert str(error)


def test_glue_files_with_a_byte_order_mark_parse(tmp_path):
    benchmarks = write_benchmarks(tmp_path / "glue")
    for relative in ("SST-2/train.tsv", "BoolQ/train.jsonl"):
        path = benchmarks / relative
        path.write_text("\ufeff" + path.read_text(encoding="utf-8"), encoding="utf-8")
    assert load_task("sst2", benchmarks).splits == load_task("sst2", write_benchmarks(tmp_path / "plain")).splits
    assert load_task("boolq", benchmarks).splits == load_task("boolq", tmp_path / "plain").splits


MINE = ["--text-column", "text", "--label-column", "label"]


@pytest.mark.parametrize("files,arguments,message", [
    ({"d.csv": "text,label,label\n" + ROWS}, ["--task", "d.csv", *MINE], "d.csv has 2 columns named 'label'"),
    ({"d/train.csv": "text,label\n" + ROWS, "d/test.csv": "text,label\na,neutral\n"}, ["--task", "d", *MINE],
     r"label\(s\) \['neutral'\] \(1 row\(s\)\) appear in no example of train.csv"),
    ({"d.txt": "text,label\n" + ROWS}, ["--task", "d.txt", *MINE], "d.txt: unknown file type '.txt'; your data must be"),
    ({"d.csv": "text,label\n" + ROWS}, ["--task", "d.csv", "--data-dir", ".", *MINE],
     "--data-dir is for GLUE/SuperGLUE tasks"),
    ({}, ["--task", "rte", "--data-dir", "nowhere"], "--data-dir nowhere is not a folder"),
])
def test_cli_refuses_bad_data_and_writes_nothing(files, arguments, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, files)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = main(["train", "--model", "t5-small", "--output-dir", "out", *arguments])
    error = capsys.readouterr().err
    assert code == 2 and re.search(message, error), error
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("arguments,message", [
    (["--examples", "-1"], "argument --examples: expected a whole number ≥ 0, got '-1'"),
    (["--seed", "-1"], "argument --seed: expected a whole number from 0 to 4294967295, got '-1'"),
    (["--train-size", "0"], "argument --train-size: expected a whole number ≥ 1, got '0'"),
])
def test_data_show_refuses_bad_numbers(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["data", "show", "--task", "rte", *arguments])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
