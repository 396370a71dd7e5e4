"""GLUE and SuperGLUE: parsing the original files and hub exports, templates, splits, low resource."""

import json

import pytest
from glue_fixtures import TRAIN, VALIDATION, write_benchmarks

from compacter.data import TASKS, DataFileError, load_task
from compacter.data.loading import load_raw
from compacter.data.tasks import get_task, round_stsb

GROUPED = {"multirc": 6, "record": 2}  # rows per paragraph / passage in the fixtures
LARGE = {"sst2", "qqp", "qnli", "record"}


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory):
    return write_benchmarks(tmp_path_factory.mktemp("benchmarks"))


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_parses_and_splits_the_paper_way(name, benchmarks):
    data = load_task(name, benchmarks)
    per_group = GROUPED.get(name, 1)
    train, validation = TRAIN * per_group, VALIDATION * per_group
    sizes = {split: len(rows) for split, rows in data.splits.items()}
    if name == "mnli":
        expected = {"train": train, "validation": validation, "test": validation}
    elif name in LARGE:
        expected = {"train": train - train // 2, "validation": train // 2, "test": validation}
    else:
        expected = {"train": train, "validation": validation // 2, "test": validation - validation // 2}
    assert sizes == expected
    for split in ("train", "validation", "test"):
        for source, target in data.text_to_text(split):
            assert source.startswith(name + " ") and target
    again = load_task(name, benchmarks)
    assert again.splits == data.splits  # deterministic
    other = load_task(name, benchmarks, seed=7)
    if name != "mnli":
        assert other.splits != data.splits


def key(example: dict) -> str:
    return json.dumps(example, sort_keys=True)


def test_validation_and_test_do_not_overlap(benchmarks):
    for name in TASKS:
        data = load_task(name, benchmarks)
        assert not {key(e) for e in data.splits["validation"]} & {key(e) for e in data.splits["test"]}
        assert not {key(e) for e in data.splits["validation"]} & {key(e) for e in data.splits["train"]}


def test_mnli_uses_mismatched_for_validation_and_matched_for_test(benchmarks):
    raw = load_raw(get_task("mnli"), benchmarks)
    data = load_task("mnli", benchmarks)
    assert data.splits["validation"] == raw["validation_mismatched"]
    assert data.splits["test"] == raw["validation_matched"]


def test_grouped_tasks_split_between_groups(benchmarks):
    multirc = load_task("multirc", benchmarks)
    paragraphs = [{e["idx"]["paragraph"] for e in multirc.splits[s]} for s in ("validation", "test")]
    assert paragraphs[0] and paragraphs[1] and not paragraphs[0] & paragraphs[1]


def test_templates(benchmarks):
    rte = load_task("rte", benchmarks).splits["train"][1]
    assert get_task("rte").template(rte) == (f"rte sentence1: {rte['sentence1']} sentence2: {rte['sentence2']}",
                                             "not_entailment")
    copa = load_task("copa", benchmarks).splits["train"][1]
    source, target = get_task("copa").template(copa)
    assert "question: effect" in source and target == "choice2"
    stsb = get_task("stsb")
    assert stsb.template({"sentence1": "a", "sentence2": "b", "label": 3.17}) == ("stsb sentence1: a sentence2: b", "3.2")
    assert [round_stsb(x) for x in (0.0, 0.09, 0.11, 2.29, 4.95, 5.0)] == ["0.0", "0.0", "0.2", "2.2", "5.0", "5.0"]
    record = load_task("record", benchmarks).splits["train"]
    with_two = next(e for e in record if len(e["answers"]) == 2)
    assert with_two["answers"] == ["Alice", "Bob"] and with_two["entities"] == ["Alice", "Bob", "Paris", "Carol"]
    assert get_task("record").template(with_two)[0].startswith("record query: @placeholder went to Paris 1 entities:")
    cola = load_task("cola", benchmarks).splits["train"][0]
    assert cola == {"sentence": cola["sentence"], "label": 0, "idx": 0}
    mnli = load_task("mnli", benchmarks).splits["train"][2]
    assert mnli["label"] == 2 and get_task("mnli").target(mnli) == "contradiction"


def test_classification_view(benchmarks):
    texts, labels = load_task("mrpc", benchmarks).classification("train")
    assert len(texts[0]) == 2 and set(labels) == {0, 1}
    texts, scores = load_task("stsb", benchmarks).classification("validation")
    assert all(isinstance(s, float) for s in scores)
    with pytest.raises(ValueError, match="copa has no classification view"):
        load_task("copa", benchmarks).classification("train")


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_hub_export_gives_the_same_examples(suffix, benchmarks, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    for name in ("rte", "boolq", "multirc"):
        task = get_task(name)
        raw = load_raw(task, benchmarks)
        folder = tmp_path / suffix / name
        folder.mkdir(parents=True)
        for split, rows in raw.items():
            if suffix == "parquet":
                pq.write_table(pa.Table.from_pylist(rows), folder / f"{split}.parquet")
            else:
                (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        assert load_task(name, tmp_path / suffix).splits == load_task(name, benchmarks).splits


def test_low_resource_subsets_are_nested(benchmarks):
    subsets = [load_task("multirc", benchmarks, train_size=n).splits["train"] for n in (10, 50, 100, 200)]
    keys = [{json.dumps(e, sort_keys=True) for e in s} for s in subsets]
    assert [len(k) for k in keys] == [10, 50, 100, 200]
    assert keys[0] < keys[1] < keys[2] < keys[3]
    with pytest.raises(ValueError, match="only 40"):
        load_task("rte", benchmarks, train_size=4000)


def test_unknown_task():
    with pytest.raises(ValueError, match="Unknown task 'wnli'.*WNLI is not part of the paper"):
        load_task("wnli")


def test_missing_and_malformed_files_name_the_file_and_line(benchmarks, tmp_path):
    with pytest.raises(DataFileError, match="No rte data in .*RTE/train.tsv"):
        load_task("rte", tmp_path)
    broken = write_benchmarks(tmp_path / "broken")
    (broken / "RTE" / "dev.tsv").unlink()
    with pytest.raises(DataFileError, match=r"found .*RTE/train.tsv but not .*RTE/dev.tsv"):
        load_task("rte", broken)
    with open(broken / "QNLI" / "train.tsv", "a") as handle:
        handle.write("99\tonly three\tfields\n")
    with pytest.raises(DataFileError, match=r"QNLI/train.tsv, line 42: 3 tab-separated fields, expected 4"):
        load_task("qnli", broken)
    sst = broken / "SST-2" / "train.tsv"
    sst.write_text("text\tlabel\nhello\t1\n")
    with pytest.raises(DataFileError, match=r"SST-2/train.tsv, line 2: missing column 'sentence'"):
        load_task("sst2", broken)
    rte = broken / "CB" / "train.jsonl"
    rte.write_text('{"premise": "a", "hypothesis": "b", "label": "maybe"}\n')
    with pytest.raises(DataFileError, match=r"CB/train.jsonl, line 1: label 'maybe' is not one of"):
        load_task("cb", broken)
    (broken / "BoolQ" / "val.jsonl").write_text('{"question": "a", "passage": "b", "label": true}\n{oops\n')
    with pytest.raises(DataFileError, match=r"BoolQ/val.jsonl, line 2: not valid JSON"):
        load_task("boolq", broken)
    export = tmp_path / "export"
    export.mkdir()
    (export / "train.jsonl").write_text('{"sentence1": "a", "label": 0}\n')
    (export / "validation.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "label": 0}\n')
    with pytest.raises(DataFileError, match=r"train.jsonl, row 1: missing column\(s\) \['sentence2'\]"):
        load_task("rte", export)


def test_data_show_and_score_commands(benchmarks, tmp_path, capsys):
    from compacter.cli import main
    refs = tmp_path / "refs.jsonl"
    assert main(["data", "show", "--task", "rte", "--data-dir", str(benchmarks), "--export", str(refs)]) == 0
    out = capsys.readouterr().out
    assert "train            40 examples" in out and "[test] input:  rte sentence1:" in out
    examples = [json.loads(line) for line in refs.read_text().splitlines()]
    preds = tmp_path / "preds.jsonl"
    labels = get_task("rte").labels
    preds.write_text("".join(json.dumps({"prediction": labels[e["label"]]}) + "\n" for e in examples[:-1])
                     + json.dumps("gibberish") + "\n")
    assert main(["score", "--task", "rte", "--predictions", str(preds), "--references", str(refs)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["invalid"] == 1 and result["accuracy"] == pytest.approx(100 * (len(examples) - 1) / len(examples))
    targets = tmp_path / "targets.jsonl"
    targets.write_text("".join(json.dumps({"target": labels[e["label"]]}) + "\n" for e in examples))
    assert main(["score", "--task", "rte", "--predictions", str(preds), "--references", str(targets)]) == 0
    assert json.loads(capsys.readouterr().out)["invalid"] == 1
    preds.write_text("{oops\n")
    assert main(["score", "--task", "rte", "--predictions", str(preds), "--references", str(refs)]) == 2
    assert "preds.jsonl, line 1: the predictions file must be JSON lines" in capsys.readouterr().err
    assert main(["data", "show", "--task", "nope", "--data-dir", str(benchmarks)]) == 2
    assert "Unknown task 'nope'" in capsys.readouterr().err
