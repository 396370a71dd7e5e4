"""One labelled file read as the examples of a task that already exists (a trained run's or adapter's).

`compacter evaluate` and `compacter score` read your test file this way: the task fixes the label
names (a label it never saw is refused, naming the file and the rows) and the example form, so that
the examples are exactly those a run made of its own test file.

* your own classification data: the text column(s) and the label column, read as `compacter train`
  reads them (data/files.py): cells as text as written, spaces around labels stripped;
* your own text-to-text data: the source and target columns, used verbatim;
* a GLUE/SuperGLUE task: a hub export (JSON lines or parquet, as `compacter data show --export`
  writes it) with the task's fields and ``label`` (``answers`` for ReCoRD).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .files import READERS, _read, _texts, require_columns
from .loading import DataFileError, _read_export
from .tasks import Task

EXPORT_SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class Columns:
    """Which column of the file holds each of the task's fields, and its label (or target)."""

    fields: tuple[str, ...]  # in the order of the task's fields
    label: str  # the label column (classification) or the target column (text-to-text)


def read_labelled(path: str | Path, task: Task, columns: Columns | None) -> list[dict]:
    """The file's examples in ``task``'s form; ``columns`` None: a GLUE/SuperGLUE hub export."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (or is not a file); give a labelled CSV / JSON-lines / "
                                "parquet file.")
    if columns is None:
        if path.suffix.lower() not in EXPORT_SUFFIXES:
            raise DataFileError(f"{path}: {task.name} examples are read from a hub export (JSON lines or parquet, as "
                                f"`compacter data show --task {task.name} --export FILE` writes them), not "
                                f"{path.suffix!r}.")
        return _read_export(task, path)
    if path.suffix.lower() not in READERS:
        raise DataFileError(f"{path}: unknown file type {path.suffix!r}; use one of {', '.join(READERS)}.")
    frame = _read(path)
    wanted = [*columns.fields, columns.label]
    roles = (("source", "target") if task.labels is None else ("text", "text-pair")[: len(columns.fields)] + ("label",))
    require_columns(path, dict(zip(roles, wanted)), list(frame.columns))
    texts = {column: _texts(frame[column], column, path) for column in wanted}
    fields = dict(zip(task.fields, columns.fields))
    if task.labels is None:  # text-to-text: the target is the answer, as load_files makes it
        return [{"source": source, "target": target, "answers": [target]}
                for source, target in zip(texts[columns.fields[0]], texts[columns.label])]
    labels = [label.strip() for label in texts[columns.label]]
    unseen = sorted(set(labels) - set(task.labels))
    if unseen:
        count = sum(label in unseen for label in labels)
        raise DataFileError(f"{path}: label(s) {unseen[:5]} ({count} row(s)) are not labels of the task {task.name!r}, "
                            f"whose labels are {list(task.labels)}: the model never saw them and cannot predict them. "
                            "Correct those labels, or drop those rows.")
    return [{**{field: texts[column][i] for field, column in fields.items()}, "label": task.labels.index(label)}
            for i, label in enumerate(labels)]
