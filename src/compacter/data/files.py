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
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from .loading import DataFileError
from .splits import paper_splits
from .tasks import Task

READERS = {".csv": pd.read_csv, ".tsv": lambda p: pd.read_csv(p, sep="\t"), ".jsonl": lambda p: pd.read_json(p, lines=True),
           ".json": lambda p: pd.read_json(p, lines=True), ".parquet": pd.read_parquet}
SPLIT_NAMES = {"train": ("train",), "validation": ("validation", "valid", "val", "dev"), "test": ("test",)}
HELD_OUT_FRACTION = 0.2
LARGE_TRAIN_SIZE = 10_000


def is_data_path(name: str) -> bool:
    path = Path(name)
    return path.is_dir() or (path.is_file() and path.suffix.lower() in READERS)


def load_files(path: str | Path, *, text_column: str | None = None, text_pair_column: str | None = None,
               label_column: str | None = None, source_column: str | None = None, target_column: str | None = None,
               seed: int = 42) -> tuple[Task, dict[str, list[dict]]]:
    """A Task describing the data and its train / validation / test examples."""
    path = Path(path)
    if bool(source_column) != bool(target_column):
        raise ValueError("Give both --source-column and --target-column for text-to-text data.")
    if not source_column and not (text_column and label_column):
        raise ValueError(f"Say which columns of {path} to use: --text-column and --label-column (optionally "
                         "--text-pair-column) for classification, or --source-column and --target-column for text-to-text.")
    files = _split_files(path)
    frames = {split: _read(file) for split, file in files.items()}
    columns = [source_column, target_column] if source_column else [text_column, text_pair_column, label_column]
    for split, frame in frames.items():
        missing = [c for c in columns if c and c not in frame.columns]
        if missing:
            raise DataFileError(f"{files[split]}: no column {missing[0]!r}; its columns are "
                                f"{list(frame.columns)}. Pass the right --*-column option.")
        for column in filter(None, columns):
            empty = frame.index[frame[column].isna()]
            if len(empty):
                raise DataFileError(f"{files[split]}: column {column!r} is empty in {len(empty)} row(s), "
                                    f"the first being data row {empty[0] + 1}. Fill or drop those rows.")
    name = path.stem if path.is_file() else path.name
    if source_column:
        task = Task(name, "custom", "", (source_column,), None, ("exact_match", "f1"), template_name="passthrough")
        raw = {split: [{"source": str(s), "target": str(t), "answers": [str(t)]}
                       for s, t in zip(frame[source_column], frame[target_column])] for split, frame in frames.items()}
    else:
        fields = tuple(c for c in (text_column, text_pair_column) if c)
        labels = tuple(sorted({str(v) for frame in frames.values() for v in frame[label_column]}))
        if len(labels) < 2:
            raise DataFileError(f"{path}: column {label_column!r} has {len(labels)} distinct label(s); "
                                "classification needs at least 2.")
        task = Task(name, "custom", "", fields, labels, ("accuracy", "f1_macro"), classification_fields=fields)
        raw = {split: [{**{f: str(row[f]) for f in fields}, "label": labels.index(str(row[label_column]))}
                       for row in frame.to_dict("records")] for split, frame in frames.items()}
    return task, _complete_splits(task, raw, seed)


def _split_files(path: Path) -> dict[str, Path]:
    if path.is_file():
        return {"train": path}
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist. Give a CSV / JSON-lines / parquet file or a folder with "
                                "train.* (and optionally validation.* and test.*) files.")
    found = {}
    for file in sorted(path.iterdir()):
        for split, names in SPLIT_NAMES.items():
            if file.stem.lower() in names and file.suffix.lower() in READERS:
                found.setdefault(split, file)
    if "train" not in found:
        raise FileNotFoundError(f"{path} has no train file: name it train.csv, train.jsonl or train.parquet "
                                "(validation.* and test.* are optional).")
    return found


def _read(file: Path) -> pd.DataFrame:
    reader = READERS.get(file.suffix.lower())
    if reader is None:
        raise DataFileError(f"{file}: unknown file type {file.suffix!r}; use one of {', '.join(READERS)}.")
    try:
        frame = reader(file)
    except (ValueError, pd.errors.ParserError, OSError) as error:
        raise DataFileError(f"{file}: could not be read as {file.suffix} ({error}).") from None
    if frame.empty:
        raise DataFileError(f"{file} is empty: it has no examples.")
    return frame


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
