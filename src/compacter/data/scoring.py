"""The files `compacter score` reads, checked line by line: predictions and references, as JSON lines.

Predictions, one per line: the generated text, as a JSON string or ``{"prediction": "text"}``
(STS-B also takes a number). A prediction that is not a label still scores (as wrong, counted in
``invalid``); a line that holds no prediction at all is refused.

References, one per line, in the order of the predictions:

* an example as ``compacter data show --export`` writes it: its ``label`` is the label's id (or
  its name; STS-B: the score, 0 to 5); MultiRC also needs ``idx`` (paragraph, question) and
  ReCoRD ``answers`` (a list of texts);
* ``{"target": "label text"}`` or a bare JSON string with the label text (all tasks but MultiRC
  and ReCoRD, whose metrics need the whole example).

Anything else is refused, naming the file, the line and what the line needs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .loading import numbered_lines, parse_json
from .metrics import compute_metrics, parse_label
from .tasks import Task

STSB_RANGE = (0.0, 5.0)
LABELLED_SUFFIXES = (".csv", ".tsv", ".parquet")  # your own labelled data, read with its columns
PREDICTION_FORMS = '"text" or {"prediction": "text"}'


def score_files(task: Task, predictions: str | Path, references: str | Path, columns=None) -> dict:
    """The task's metrics of a predictions file against a references file: JSON lines as above or, for your own
    data (``columns``: data/labelled.py), a labelled CSV / TSV / parquet file as you trained from."""
    predicted = read_predictions(predictions, task)
    if columns is not None and Path(references).suffix.lower() in LABELLED_SUFFIXES:
        from .labelled import read_labelled

        gold = read_labelled(references, task, columns)
    else:
        gold = read_references(references, task)
    if len(predicted) != len(gold):
        raise ValueError(f"{predictions} has {len(predicted)} predictions and {references} has {len(gold)} references; "
                         "they pair up line by line, so both must have as many lines.")
    return compute_metrics(task, predicted, gold)


def read_predictions(path: str | Path, task: Task) -> list[str]:
    predictions = []
    for line, row in _json_lines(path, "predictions"):
        value = row.get("prediction", _MISSING) if isinstance(row, dict) else row
        if value is _MISSING:
            raise ValueError(f"{path}, line {line}: no \"prediction\" key (the line has {sorted(row)}); write each "
                             f"prediction as {PREDICTION_FORMS}.")
        if isinstance(value, str):
            predictions.append(value)
        elif task.name == "stsb" and _is_number(value):
            predictions.append(repr(float(value)))
        else:
            wanted = "the generated text" + (" or a number" if task.name == "stsb" else
                                             f" (a label of {task.name}: {', '.join(task.labels or [])})")
            raise ValueError(f"{path}, line {line}: a prediction must be {wanted}, got {json.dumps(value)}; write "
                             f"each prediction as {PREDICTION_FORMS}.")
    return predictions


def read_references(path: str | Path, task: Task) -> list[dict]:
    return [_reference(task, row, f"{path}, line {line}") for line, row in _json_lines(path, "references")]


def _reference(task: Task, row: Any, where: str) -> dict:
    """One reference as the example form compute_metrics reads: {"label": ...} (and "idx") or {"answers": [...]}."""
    whole_example = task.name in ("multirc", "record")
    if task.labels is None and task.benchmark == "custom":  # your own text-to-text data: the target text is the answer
        return {"answers": _answers(row, where)}
    if isinstance(row, str) or (isinstance(row, dict) and "target" in row and "label" not in row and "answers" not in row):
        if whole_example:
            raise ValueError(f"{where}: {task.name} references need the full examples (idx / answers); write them "
                             f"with `compacter data show --task {task.name} --split test --export FILE`.")
        target = row if isinstance(row, str) else row["target"]
        if not isinstance(target, str):
            raise ValueError(f"{where}: \"target\" must be the label's text, got {json.dumps(target)}.")
        return {"label": _label(task, target, where, "target")}
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a reference must be an example (from `compacter data show --export`), "
                         f"{{\"target\": \"label text\"}} or a JSON string, got {json.dumps(row)}.")
    if task.name == "record":
        answers = row.get("answers")
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise ValueError(f"{where}: a record reference needs \"answers\", a list of texts (as `compacter data show "
                             "--export` writes them).")
        return {"answers": answers}
    if "label" not in row:
        raise ValueError(f"{where}: a reference needs \"label\" (an example from `compacter data show --export`) or "
                         f"\"target\" (the label's text); the line has {sorted(row)}.")
    reference = {"label": _label(task, row["label"], where, "label")}
    if task.name == "multirc":
        idx = row.get("idx")
        if not isinstance(idx, dict) or "paragraph" not in idx or "question" not in idx:
            raise ValueError(f"{where}: a multirc reference needs \"idx\" with its paragraph and question (as "
                             "`compacter data show --export` writes it).")
        reference["idx"] = idx
    return reference


def _answers(row: Any, where: str) -> list[str]:
    """The gold answer(s) of a text-to-text reference: a string, {"target": text} or {"answers": [texts]}."""
    if isinstance(row, str):
        return [row]
    if isinstance(row, dict) and isinstance(row.get("answers"), list) and all(isinstance(a, str) for a in row["answers"]):
        return row["answers"]
    if isinstance(row, dict) and isinstance(row.get("target"), str):
        return [row["target"]]
    raise ValueError(f"{where}: a text-to-text reference is the target text, as a JSON string, {{\"target\": "
                     f"\"text\"}} or {{\"answers\": [\"text\", ...]}}, got {json.dumps(row)}.")


def _label(task: Task, value: Any, where: str, key: str) -> int | float:
    """A reference's label: an id (or a label's name) of the task; STS-B: a score from 0 to 5."""
    if task.name == "stsb":
        score = float(value) if _is_number(value) else _number_text(value)
        if score is None or not STSB_RANGE[0] <= score <= STSB_RANGE[1]:
            raise ValueError(f"{where}: {key} {json.dumps(value)} is not an stsb score (a number from "
                             f"{STSB_RANGE[0]:g} to {STSB_RANGE[1]:g}).")
        return score
    labels = list(task.labels or [])
    if isinstance(value, str) and parse_label(task, value) is not None:
        return parse_label(task, value)
    if key == "label" and isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(labels):
        return value
    ids = f" or their ids 0..{len(labels) - 1}" if key == "label" else ""
    raise ValueError(f"{where}: {key} {json.dumps(value)} is not a {task.name} label; its labels are {labels}{ids}.")


def _json_lines(path: str | Path, what: str):
    """(line number, parsed JSON) of every non-blank line; a missing, undecodable or empty file is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"The {what} file {path} does not exist (or is not a file).")
    rows = []
    for line, content in numbered_lines(path):  # not splitlines(): JSON text may hold U+2028
        if content.strip():
            rows.append((line, parse_json(content, f"{path}, line {line}: the {what} file must be JSON lines")))
    if not rows:
        raise ValueError(f"The {what} file {path} is empty: it needs one JSON line per example.")
    return rows


_MISSING = object()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number_text(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
