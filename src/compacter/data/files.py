"""Your own data: a CSV, JSON-lines or parquet file (or a folder of train/validation/test files).

Two shapes are understood:

* classification: ``text_column`` (and optionally ``text_pair_column``) and ``label_column``;
  labels may be names or numbers and are kept as names (sorted). A T5 model reads
  ``"<name> <text_column>: … <text_pair_column>: …"`` and writes the label name; an encoder model
  gets a classification head. Metrics: accuracy and macro-F1.
* text-to-text: ``source_column`` and ``target_column``, used verbatim. Metrics: exact match and
  token F1 (SQuAD normalisation).

Missing splits are made the paper's way (SPEC §4): with validation but no test, a training set of
≥ 10k examples gives 1,000 of its examples to validation and the validation set becomes test, and
a smaller one has its validation set cut in half. With a training file only, a seeded 20% of it
first becomes the "original" validation set.

Every file is checked where it is read: cells are read as text as written ("NA" and "null" stay
text), and an empty cell, two columns of one name (or a JSON key twice in a row), two files for one
split, or a label that no training example has is refused, naming the file and the row. Labels
with spaces around them are stripped, with a warning; labels are read in one Unicode form (NFC), and
two that differ only by invisible characters (``pos`` and ``pos\u200b``) are refused, naming both.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import numbers
import re
import unicodedata
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .loading import DataFileError, parse_json
from .splits import paper_splits
from .tasks import Task

SPLIT_NAMES = {"train": ("train",), "validation": ("validation", "valid", "val", "dev"), "test": ("test",)}
INVISIBLE_CATEGORIES = ("Cf", "Cc", "Zl", "Zp")  # format characters (zero-width, BOM, soft hyphen) and controls
HELD_OUT_FRACTION = 0.2
FEW_EXAMPLES = 10  # below this in a split, a warning: its scores mean little
LARGE_TRAIN_SIZE = 10_000


def is_data_path(name: str) -> bool:
    path = Path(name)
    return path.is_dir() or (path.is_file() and path.suffix.lower() in READERS)


def load_files(path: str | Path, *, text_column: str | None = None, text_pair_column: str | None = None,
               label_column: str | None = None, source_column: str | None = None, target_column: str | None = None,
               seed: int = 42) -> tuple[Task, dict[str, list[dict]]]:
    """A Task describing the data and its train / validation / test examples."""
    path = Path(path)
    roles = _column_roles(path, text_column, text_pair_column, label_column, source_column, target_column)
    files = _split_files(path)
    frames = {split: _read(file) for split, file in files.items()}
    for split, frame in frames.items():
        require_columns(files[split], roles, list(frame.columns))
    texts = {split: {c: _texts(frame[c], c, files[split]) for c in roles.values()} for split, frame in frames.items()}
    name = path.stem if path.is_file() else path.name
    if source_column:
        task = Task(name, "custom", "", (source_column,), None, ("exact_match", "f1"), template_name="passthrough")
        raw = {split: [{"source": s, "target": t, "answers": [t]}
                       for s, t in zip(columns_[source_column], columns_[target_column])]
               for split, columns_ in texts.items()}
    else:
        fields = tuple(c for c in (text_column, text_pair_column) if c)
        labels, by_split = _labels({split: columns_[label_column] for split, columns_ in texts.items()}, label_column,
                                   files)
        raw = {split: [{**{f: texts[split][f][i] for f in fields}, "label": labels.index(label)}
                       for i, label in enumerate(by_split[split])] for split in texts}
        task = Task(name, "custom", "", fields, labels, ("accuracy", "f1_macro"), classification_fields=fields)
    splits = _complete_splits(task, raw, seed)
    small = {split: len(rows) for split, rows in splits.items() if len(rows) < FEW_EXAMPLES}
    if small:
        sizes = ", ".join(f"{split} {count}" for split, count in small.items())
        warnings.warn(f"{path}: the splits have very few examples ({sizes}): a model trained and scored on so few says "
                      "little. Give more examples (or validation.* and test.* files of their own).", UserWarning,
                      stacklevel=2)
    return task, splits


def require_columns(file: Path, roles: dict[str, str], present: list[str]) -> None:
    """Refuse a file without one of the columns ``roles`` names (role: column, a role named as its option:
    ``text-pair`` is --text-pair-column), naming the option that chooses another."""
    for role, column in roles.items():
        if column not in present:
            raise DataFileError(f"{file}: no {role} column {column!r}; its columns are {present}. Name the column with "
                                f"--{role}-column (or fix the file).")


def _column_roles(path: Path, text: str | None, pair: str | None, label: str | None, source: str | None,
             target: str | None) -> dict[str, str]:
    """The columns to read, by role (named as their options: ``text-pair`` is --text-pair-column), for one of the
    two shapes; a mix of both, or one column in two roles, is refused."""
    if bool(source) != bool(target):
        raise ValueError("Give both --source-column and --target-column for text-to-text data.")
    if source and (text or pair or label):
        raise ValueError("Give either --source-column and --target-column (text-to-text) or --text-column and "
                         "--label-column (classification), not both.")
    if not source and not (text and label):
        raise ValueError(f"Say which columns of {path} to use: --text-column and --label-column (optionally "
                         "--text-pair-column) for classification, or --source-column and --target-column for text-to-text.")
    given = {"source": source, "target": target} if source else {"text": text, "text-pair": pair, "label": label}
    roles = {role: column for role, column in given.items() if column}
    columns = list(roles.values())
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise ValueError(f"The column {repeated[0]!r} is given for two roles; each --*-column names another column.")
    return roles


def _texts(values: pd.Series, column: str, file: Path) -> list[str]:
    """A column's cells as text; an empty cell (or one that holds a list or mapping) is refused with its row."""
    texts, empty = [], []
    for row, value in enumerate(values, start=1):
        if isinstance(value, (list, tuple, dict, np.ndarray)):
            raise DataFileError(f"{file}: column {column!r} holds a {type(value).__name__} in data row {row}; it must "
                                "hold text (or numbers).")
        text = _cell_text(value)
        if text is None:
            empty.append(row)
        texts.append(text)
    if empty:
        raise DataFileError(f"{file}: column {column!r} is empty in {len(empty)} row(s), the first being data row "
                            f"{empty[0]}. Fill or drop those rows.")
    return texts


def _cell_text(value: Any) -> str | None:
    """A cell as text (a whole number written 1.0 reads as "1"); None when it is missing or blank."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and float(value).is_integer():
        return str(int(value))
    text = str(value)
    return text if text.strip() else None


def _labels(by_split: dict[str, list[str]], column: str,
            files: dict[str, Path]) -> tuple[tuple[str, ...], dict[str, list[str]]]:
    """The label names (sorted, from the training file) and each split's labels. Spaces around a label are dropped
    (with a warning); a label that no training example has is refused: a classifier could never learn it."""
    by_split = _same_spellings(by_split, column, files)
    padded = sorted({label for labels in by_split.values() for label in labels if label != label.strip()})
    if padded:
        warnings.warn(f"Column {column!r}: {len(padded)} label(s) had spaces around them (e.g. {padded[0]!r}); they "
                      "were removed, so that ' positive' and 'positive' are one class.", UserWarning, stacklevel=3)
        for split, labels in by_split.items():
            by_split[split] = [label.strip() for label in labels]
    names = tuple(sorted(set(by_split["train"])))
    for split, labels in by_split.items():
        unseen = sorted(set(labels) - set(names))
        if unseen:
            count = sum(label in unseen for label in labels)
            raise DataFileError(f"{files[split]}: label(s) {unseen[:5]} ({count} row(s)) appear in no example of "
                                f"{files['train'].name}, so a classifier could never predict them. Correct those "
                                f"labels, or move examples of them into {files['train'].name}.")
    if len(names) < 2:
        raise DataFileError(f"{files['train']}: column {column!r} has {len(names)} distinct label(s); classification "
                            "needs at least 2.")
    return names, by_split


def _same_spellings(by_split: dict[str, list[str]], column: str,
                    files: dict[str, Path]) -> dict[str, list[str]]:
    """Labels in one Unicode form (NFC: 'café' typed either way is one label); labels that differ only by invisible
    characters (a zero-width space, a soft hyphen, a byte-order mark) are refused, naming both spellings."""
    by_split = {split: [unicodedata.normalize("NFC", label) for label in labels] for split, labels in by_split.items()}
    first_seen: dict[str, tuple[str, str, int]] = {}  # visible form → (spelling, split, data row)
    for split, labels in by_split.items():
        for row, label in enumerate(labels, start=1):
            visible = "".join(c for c in label if unicodedata.category(c) not in INVISIBLE_CATEGORIES).strip()
            spelling, where, at = first_seen.setdefault(visible, (label, split, row))
            if spelling != label and spelling.strip() != label.strip():
                raise DataFileError(
                    f"Column {column!r}: the labels {spelling!r} ({files[where].name}, data row {at}) and {label!r} "
                    f"({files[split].name}, data row {row}) differ only by invisible characters, so they would be two "
                    "classes that look the same. Correct the labels so that each class is spelled one way.")
    return by_split


def _split_files(path: Path) -> dict[str, Path]:
    if path.is_file():
        return {"train": path}
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist. Give a CSV / JSON-lines / parquet file or a folder with "
                                "train.* (and optionally validation.* and test.*) files.")
    found: dict[str, list[Path]] = {split: [] for split in SPLIT_NAMES}
    for file in sorted(path.iterdir()):
        for split, names in SPLIT_NAMES.items():
            if file.is_file() and file.stem.lower() in names and file.suffix.lower() in READERS:
                found[split].append(file)
    for split, files in found.items():
        if len(files) > 1:
            raise DataFileError(f"{path} has {len(files)} {split} files ({', '.join(f.name for f in files)}); keep one "
                                "of them there, so that it is clear which one to use.")
    if not found["train"]:
        raise FileNotFoundError(f"{path} has no train file: name it train.csv, train.jsonl or train.parquet "
                                "(validation.* and test.* are optional).")
    return {split: files[0] for split, files in found.items() if files}


def _read(file: Path) -> pd.DataFrame:
    reader = READERS.get(file.suffix.lower())
    if reader is None:
        raise DataFileError(f"{file}: unknown file type {file.suffix!r}; use one of {', '.join(READERS)}.")
    if file.stat().st_size == 0:
        raise DataFileError(f"{file} is empty: it has no examples.")
    try:
        frame = reader(file)
    except UnicodeDecodeError as error:
        raise DataFileError(f"{file}{_bad_line(file)} is not UTF-8 text ({error.reason}); save it as UTF-8.") from None
    except (ValueError, pd.errors.ParserError, OSError) as error:
        if isinstance(error, DataFileError):
            raise
        raise DataFileError(f"{file}: could not be read as {file.suffix} ({str(error).strip()}).") from None
    if frame.empty:
        raise DataFileError(f"{file} is empty: it has no examples.")
    return frame


def _bad_line(file: Path) -> str:
    """", line N": where the first bytes that are not UTF-8 are (pandas says only an offset in its buffer)."""
    raw = file.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        return f", line {line}"
    return ""


def _read_delimited(file: Path, separator: str) -> pd.DataFrame:
    """Every cell as text, as written ("NA" and "null" are text too); only an empty cell is missing."""
    with open(file, encoding="utf-8-sig", newline="") as handle:
        header = next(csv.reader(handle, delimiter=separator), [])
    _refuse_repeated(file, header)
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)  # pandas would drop the extra fields of a row
        try:
            return pd.read_csv(file, sep=separator, dtype=str, keep_default_na=False, na_values=[""],
                               encoding="utf-8-sig", index_col=False)
        except (pd.errors.ParserWarning, pd.errors.ParserError) as error:
            where = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(error))
            row = f"line {where[2]} has {where[3]} fields and" if where else "a row has more fields than"
            raise DataFileError(f"{file}: {row} the header has {len(header)} columns; quote the fields that contain "
                                f"{'a tab' if separator == chr(9) else 'a comma'}.") from None


def _read_json(file: Path) -> pd.DataFrame:
    """JSON lines (one object per line), or a .json file holding one list of objects."""
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise DataFileError(f"{file}, line {line}: not UTF-8 text ({error.reason}); save the file as UTF-8.") from None
    if file.suffix.lower() == ".json" and text.lstrip().startswith("["):
        unit, numbered = "item", list(enumerate(_json(text, file, None), start=1))  # a list: its text starts with "["
    else:
        unit, numbered = "line", [(line, _json(content, file, line))
                                  for line, content in enumerate(text.split("\n"), start=1) if content.strip()]
    for number, row in numbered:
        if not isinstance(row, dict):
            raise DataFileError(f"{file}, {unit} {number}: expected a JSON object, got {type(row).__name__}.")
    return pd.DataFrame([row for _, row in numbered], dtype=object)


def _json(text: str, file: Path, line: int | None) -> Any:
    where = f"{file}, line {line}" if line is not None else str(file)
    return parse_json(text, where, object_pairs_hook=lambda pairs: _object(pairs, where))


def _object(pairs: list[tuple[str, Any]], where: str) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise DataFileError(f"{where}: the key {repeated[0]!r} appears twice in one object; JSON readers would keep "
                            "only one of them. Rename or drop the other.")
    return dict(pairs)


def _read_parquet(file: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    _refuse_repeated(file, pq.read_schema(file).names)
    return pd.read_parquet(file)


def _refuse_repeated(file: Path, names: list[str]) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataFileError(f"{file} has {names.count(repeated[0])} columns named {repeated[0]!r}; which one is meant "
                            "cannot be told. Rename them so that every column name is unique.")


READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": lambda file: _read_delimited(file, ","), ".tsv": lambda file: _read_delimited(file, "\t"),
    ".jsonl": _read_json, ".json": _read_json, ".parquet": _read_parquet}


def _complete_splits(task: Task, raw: dict[str, list[dict]], seed: int) -> dict[str, list[dict]]:
    if "validation" in raw and "test" in raw:
        return {"train": raw["train"], "validation": raw["validation"], "test": raw["test"]}
    if "validation" not in raw:
        order = np.random.RandomState(seed).permutation(len(raw["train"]))
        held = max(2, int(len(order) * HELD_OUT_FRACTION))
        if len(order) - held < 1:
            raise DataFileError(f"{len(order)} training examples are too few to hold out validation and test examples.")
        train = raw["train"]
        raw = {"train": [train[i] for i in sorted(order[held:])], "validation": [train[i] for i in sorted(order[:held])]}
    if "test" in raw:
        return raw
    large = len(raw["train"]) >= LARGE_TRAIN_SIZE
    return paper_splits(dataclasses.replace(task, large=large), raw, seed)
