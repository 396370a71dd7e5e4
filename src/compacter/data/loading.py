"""Reading a task's raw splits, in the hub's column names, from any of three sources.

(a) the Hugging Face hub through ``datasets`` (online users);
(b) a folder with the benchmark's originally released files: GLUE's TSVs (``CoLA/train.tsv``,
    ``MNLI/dev_matched.tsv``, ...) and SuperGLUE's JSONL (``BoolQ/val.jsonl``, ...), either the
    benchmark's root folder or the task's own folder;
(c) a local export of the hub dataset: ``train.parquet`` / ``validation.jsonl`` / ... (hub columns).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .tasks import HUB_DATASETS, Task

EXPORT_SUFFIXES = (".parquet", ".jsonl", ".json")


class DataFileError(ValueError):
    """A data file that is missing, lacks a column, or has a malformed row; says where and what."""


def load_raw(task: Task, data_dir: str | Path | None = None) -> dict[str, list[dict]]:
    """Raw splits of ``task`` by our split names (``Task.hub_splits``), each a list of hub-schema dicts."""
    if data_dir is None:
        return _from_hub(task)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataFileError(f"--data-dir {data_dir} is not a folder.")
    originals = _original_paths(task, data_dir)
    if originals:
        return {split: list(_read_original(task, split, path)) for split, path in originals.items()}
    exports = _export_paths(task, data_dir)
    if exports:
        return {split: _read_export(task, path) for split, path in exports.items()}
    expected = ", ".join(task.original_files.values())
    splits = ", ".join(f"{s}.parquet|.jsonl" for s in task.hub_splits)
    raise DataFileError(
        f"No {task.name} data in {data_dir}: expected the original files ({expected}, under the benchmark's "
        f"folder or the task's own) or a hub export ({splits})."
    )


def _from_hub(task: Task) -> dict[str, list[dict]]:
    import datasets

    name = HUB_DATASETS[task.benchmark]
    try:
        dataset = datasets.load_dataset(name, task.hub_config)
    except (ConnectionError, OSError) as error:
        raise DataFileError(
            f"Could not load {name} ({task.hub_config}) from the Hugging Face hub: {error}. Offline, pass "
            "--data-dir (data_dir=) with the benchmark's original files or a local parquet/JSON-lines export."
        ) from None
    return {ours: [dict(row) for row in dataset[theirs]] for ours, theirs in task.hub_splits.items()}


def _original_paths(task: Task, data_dir: Path) -> dict[str, Path]:
    for root in (data_dir, data_dir.parent):
        paths = {split: root / relative for split, relative in task.original_files.items()}
        if all(path.is_file() for path in paths.values()):
            return paths
        present = [path for path in paths.values() if path.is_file()]
        if present:
            missing = [str(path) for path in paths.values() if not path.is_file()]
            raise DataFileError(f"{task.name}: found {present[0]} but not {', '.join(missing)}.")
    return {}


def _export_paths(task: Task, data_dir: Path) -> dict[str, Path]:
    for folder in (data_dir / task.name, data_dir):
        found = {}
        for split in task.hub_splits:
            for suffix in EXPORT_SUFFIXES:
                if (folder / f"{split}{suffix}").is_file():
                    found[split] = folder / f"{split}{suffix}"
                    break
        if found:
            missing = sorted(set(task.hub_splits) - set(found))
            if missing:
                raise DataFileError(f"{task.name}: {folder} has {', '.join(p.name for p in found.values())} "
                                    f"but no file for the split(s) {missing}.")
            return found
    return {}


def _read_export(task: Task, path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        rows = list(json_lines(path))
    required = set(task.fields) | ({"label"} if task.name != "record" else {"answers"})
    for line, row in enumerate(rows, start=1):
        missing = required - set(row)
        if missing:
            raise DataFileError(f"{path}, row {line}: missing column(s) {sorted(missing)}; "
                                f"a {task.name} export needs {sorted(required)}.")
    return rows


def json_lines(path: str | Path) -> Iterator[dict]:
    """The JSON objects of a JSON-lines file (blank lines skipped); a bad line is refused with its number."""
    for line, text in numbered_lines(path):
        if not text.strip():
            continue
        row = parse_json(text, f"{path}, line {line}")
        if not isinstance(row, dict):
            raise DataFileError(f"{path}, line {line}: expected a JSON object, got {type(row).__name__}.")
        yield row


def numbered_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file's lines, split at "\\n" only (JSON text may hold U+2028); text that is
    not UTF-8 is refused naming its line."""
    path = Path(path)
    if path.is_dir():
        raise DataFileError(f"{path} is a folder; give a JSON-lines file.")
    with open(path, "rb") as handle:
        for line, raw in enumerate(handle, start=1):
            yield line, decode_utf8(raw, f"{path}, line {line}", first=line == 1)


def decode_utf8(raw: bytes, where: str, first: bool = True) -> str:
    """``raw`` as text (a byte-order mark at the start dropped); not UTF-8: an error naming ``where`` and the byte."""
    try:
        return raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as error:
        raise DataFileError(f"{where}: not UTF-8 text ({error.reason} at byte {error.start + 1} of the line); save the "
                            "file as UTF-8.") from None


class _NotJsonNumber(Exception):
    pass


def _no_constant(name: str) -> None:
    raise _NotJsonNumber(name)


def parse_json(text: str, where: str, **options) -> Any:
    """``json.loads`` of ``text`` with every way it fails said as a DataFileError naming ``where``: invalid JSON,
    NaN or Infinity (not JSON, though Python's reader takes them), brackets nested too deep to read."""
    try:
        return json.loads(text, parse_constant=_no_constant, **options)
    except json.JSONDecodeError as error:
        raise DataFileError(f"{where}: not valid JSON ({error.msg}).") from None
    except _NotJsonNumber as error:
        raise DataFileError(f"{where}: {error} is not a JSON number (JSON has neither NaN nor Infinity); write a "
                            "number or a string.") from None
    except RecursionError:
        raise DataFileError(f"{where}: the JSON nests brackets too deeply to be read; an example is one flat "
                            "object.") from None


def _tsv(path: Path, header: bool = True) -> Iterator[tuple[int, dict]]:
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        columns = next(reader) if header else None
        for line, row in enumerate(reader, start=2 if header else 1):
            if not row:
                continue
            if columns is None:
                yield line, dict(enumerate(row))
                continue
            if len(row) != len(columns):
                raise DataFileError(f"{path}, line {line}: {len(row)} tab-separated fields, expected "
                                    f"{len(columns)} ({', '.join(columns)}).")
            yield line, dict(zip(columns, row))


def _get(row: dict, key, path: Path, line: int):
    if key not in row:
        raise DataFileError(f"{path}, line {line}: missing column {key!r}.")
    return row[key]


def _label_id(task: Task, value, path: Path, line: int) -> int:
    if isinstance(value, bool):
        return int(value)
    text = str(value).strip()
    if task.labels and text in task.labels:
        return task.labels.index(text)
    if text.lstrip("-").isdigit() and task.labels and 0 <= int(text) < len(task.labels):
        return int(text)
    raise DataFileError(f"{path}, line {line}: label {value!r} is not one of {list(task.labels or [])} "
                        f"or their ids 0..{len(task.labels or []) - 1}.")


# Original column → hub column, per GLUE task; then the label column.
_GLUE_COLUMNS = {
    "sst2": ({"sentence": "sentence"}, "label"),
    "mrpc": ({"#1 String": "sentence1", "#2 String": "sentence2"}, "Quality"),
    "qqp": ({"question1": "question1", "question2": "question2"}, "is_duplicate"),
    "stsb": ({"sentence1": "sentence1", "sentence2": "sentence2"}, "score"),
    "mnli": ({"sentence1": "premise", "sentence2": "hypothesis"}, "gold_label"),
    "qnli": ({"question": "question", "sentence": "sentence"}, "label"),
    "rte": ({"sentence1": "sentence1", "sentence2": "sentence2"}, "label"),
}


def _read_original(task: Task, split: str, path: Path) -> Iterator[dict]:
    if task.benchmark == "glue":
        yield from _read_glue(task, path)
    else:
        yield from _read_superglue(task, path)


def _read_glue(task: Task, path: Path) -> Iterator[dict]:
    if task.name == "cola":  # no header: source, label, original label, sentence
        for idx, (line, row) in enumerate(_tsv(path, header=False)):
            if len(row) != 4:
                raise DataFileError(f"{path}, line {line}: {len(row)} fields, expected 4 (source, label, "
                                    "original label, sentence).")
            yield {"sentence": row[3], "label": _label_id(task, row[1], path, line), "idx": idx}
        return
    columns, label_column = _GLUE_COLUMNS[task.name]
    for idx, (line, row) in enumerate(_tsv(path)):
        example = {ours: _get(row, theirs, path, line) for theirs, ours in columns.items()}
        label = _get(row, label_column, path, line)
        if task.name == "stsb":
            try:
                example["label"] = float(label)
            except ValueError:
                raise DataFileError(f"{path}, line {line}: score {label!r} is not a number.") from None
        else:
            example["label"] = _label_id(task, label, path, line)
        example["idx"] = idx
        yield example


def _read_superglue(task: Task, path: Path) -> Iterator[dict]:
    for line, row in enumerate(json_lines(path), start=1):
        if task.name == "multirc":
            yield from _multirc_rows(task, row, path, line)
        elif task.name == "record":
            yield from _record_rows(row, path, line)
        else:
            example = {name: _get(row, name, path, line) for name in task.fields}
            if task.name == "wic":
                example.update({k: _get(row, k, path, line) for k in ("start1", "end1", "start2", "end2")})
            example["label"] = _label_id(task, _get(row, "label", path, line), path, line)
            example["idx"] = row.get("idx", line - 1)
            yield example


def _multirc_rows(task: Task, row: dict, path: Path, line: int) -> Iterator[dict]:
    passage = _get(row, "passage", path, line)
    for question in _get(passage, "questions", path, line):
        for answer in _get(question, "answers", path, line):
            yield {"paragraph": _get(passage, "text", path, line), "question": _get(question, "question", path, line),
                   "answer": _get(answer, "text", path, line),
                   "idx": {"paragraph": row.get("idx"), "question": question.get("idx"), "answer": answer.get("idx")},
                   "label": _label_id(task, _get(answer, "label", path, line), path, line)}


def _record_rows(row: dict, path: Path, line: int) -> Iterator[dict]:
    passage = _get(row, "passage", path, line)
    text = _get(passage, "text", path, line)
    entities = list(dict.fromkeys(text[e["start"]: e["end"] + 1] for e in _get(passage, "entities", path, line)))
    for qa in _get(row, "qas", path, line):
        answers = list(dict.fromkeys(a["text"] for a in qa.get("answers", [])))
        yield {"passage": text, "query": _get(qa, "query", path, line), "entities": entities, "answers": answers,
               "idx": {"passage": row.get("idx"), "query": qa.get("idx")}}
