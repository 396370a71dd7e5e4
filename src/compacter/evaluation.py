"""`compacter evaluate`: score a finished run or a saved adapter on a labelled file, with the task's metrics.

The adapter is loaded onto its base as `compacter predict` loads it (predict.py ``load_model``),
and the examples are encoded and answered by the very code that scored the run's own test split
(training/inputs.py ``encode``, training/predictions.py ``predict``), with the run's lengths, evaluation
batch size, precision and quantized base: evaluating a run on its own test file gives its recorded
test score exactly. The metrics are the task's (data/metrics.py): accuracy and macro-F1 for your
own classification data, the paper's for GLUE/SuperGLUE, exact match and token F1 for text-to-text.

Written to the output folder: ``evaluation.json`` (the metrics, what was evaluated, the confusion
matrix), ``evaluation.md`` (the same as tables), ``predictions.jsonl``, and for classification
``confusion_matrix.png``.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from .data import TaskData
from .data.metrics import compute_metrics, parse_label
from .data.tasks import Task
from .io import atomic_write
from .model_anatomy import model_family

NOT_A_LABEL = "(not a label)"  # a generated prediction that is none of the labels


@dataclass
class Evaluation:
    """What was evaluated, on what, and how it scored."""

    task: Task
    metrics: dict[str, Any]
    predictions: list[str]
    examples: list[dict]
    about: dict[str, Any] = field(default_factory=dict)  # adapter, base model, input, split, settings

    def confusion(self) -> tuple[list[str], list[list[int]]] | None:
        """(class names, counts[gold][predicted]) for classification; None otherwise."""
        if not self.task.labels or self.task.name == "stsb":
            return None
        names = list(self.task.labels)
        parsed = [parse_label(self.task, prediction) for prediction in self.predictions]
        gold = [int(example["label"]) for example in self.examples]
        if any(p is None for p in parsed):
            names.append(NOT_A_LABEL)
        predicted = [len(self.task.labels) if p is None else p for p in parsed]
        counts = confusion_matrix(gold, predicted, labels=list(range(len(names))))
        return names, counts.tolist()


@dataclass(frozen=True)
class EvalSettings:
    """What training.predictions.predict reads of a run's settings."""

    eval_batch_size: int
    max_target_length: int
    fsdp: bool = False
    compile: bool = False  # evaluate decodes eagerly: its one pass over a file would not repay compiling


def evaluate(model, tokenizer, task: Task, examples: list[dict], *, source_length: int, target_length: int,
             batch_size: int, precision: str = "fp32") -> tuple[list[str], dict[str, Any]]:
    """Predictions (as strings) and the task's metrics of ``model`` (carrying the task's adapter) on ``examples``."""
    from .training.distributed import Processes
    from .training.inputs import encode
    from .training.predictions import predict

    if not examples:
        raise ValueError("There are no examples to evaluate.")
    text_to_text = model_family(model) == "seq2seq"
    rows = encode(tokenizer, task, examples, text_to_text=text_to_text, source_length=source_length,
                  target_length=target_length)
    device = next(model.parameters()).device
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
                if precision != "fp32" else contextlib.nullcontext())
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    predictions = predict(model, rows, TaskData(task, {}), text_to_text, EvalSettings(batch_size, target_length),
                          Processes(0, 1, device), pad_id, tokenizer, autocast)
    return predictions, compute_metrics(task, predictions, examples)


def write_reports(evaluation: Evaluation, output: Path) -> list[Path]:
    """evaluation.json, evaluation.md, predictions.jsonl and (classification) confusion_matrix.png in ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    confusion = evaluation.confusion()
    record = {**evaluation.about, "task": evaluation.task.name, "metrics": evaluation.metrics,
              "confusion_matrix": None if confusion is None else {"labels": confusion[0], "counts": confusion[1]}}
    written = [output / "evaluation.json", output / "evaluation.md", output / "predictions.jsonl"]
    atomic_write(written[0], lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2), encoding="utf-8"))
    atomic_write(written[1], lambda tmp: Path(tmp).write_text(markdown(evaluation, confusion), encoding="utf-8"))
    lines = "".join(json.dumps({"prediction": p}) + "\n" for p in evaluation.predictions)
    atomic_write(written[2], lambda tmp: Path(tmp).write_text(lines, encoding="utf-8"))
    if confusion is not None:
        written.append(output / "confusion_matrix.png")
        atomic_write(written[-1], lambda tmp: plot_confusion(*confusion, evaluation.task.name, tmp))
    return written


def markdown(evaluation: Evaluation, confusion: tuple[list[str], list[list[int]]] | None) -> str:
    about = evaluation.about
    lines = [f"# {evaluation.task.name}: {about.get('input', '')}", "",
             f"Adapter `{about.get('adapter')}` on `{about.get('base_model')}`, {evaluation.metrics['n']} examples "
             f"({evaluation.metrics['invalid']} predictions not a label or empty).", "",
             "| metric | value |", "|---|---:|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in evaluation.metrics.items()
              if name not in ("n", "invalid")]
    if confusion is not None:
        names, counts = confusion
        lines += ["", "Confusion matrix (rows: true label, columns: predicted):", "",
                  "| true \\ predicted | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        lines += [f"| {name} | " + " | ".join(str(c) for c in row) + " |" for name, row in zip(names, counts)]
    return "\n".join(lines) + "\n"


def plot_confusion(names: list[str], counts: list[list[int]], title: str, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.6 * len(names) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(np.array(counts), display_labels=names).plot(ax=axes, cmap="Blues", colorbar=False,
                                                                       xticks_rotation=45)
    axes.set_title(f"{title}: confusion matrix")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=120)
    plt.close(figure)


@dataclass
class Request:
    """What `compacter evaluate` was asked: a run (--run) or an adapter on a base (--adapter, --model)."""

    run: str | None = None
    adapter: str | None = None
    model: str | None = None
    input: str | None = None  # a labelled file (or a folder of split files); None with --run: the run's own data
    split: str = "test"
    columns: dict[str, str | None] = field(default_factory=dict)  # text_column, label_column, ... (your own data)
    output: str | None = None
    device: str | None = None
    batch_size: int | None = None
    tokenizer: str | None = None


def run_evaluation(request: Request) -> tuple[Evaluation, Path]:
    """Check everything, load the model, evaluate, and only then write the reports; returns them and their folder."""
    from .data.labelled import read_labelled
    from .predict import DEFAULT_SOURCE_LENGTH, DEFAULT_TARGET_LENGTH, load_model, task_of
    from .runs import ADAPTER_DIR, finished_run, run_examples
    from .saving import read_description

    if bool(request.run) == bool(request.adapter):
        raise ValueError("Say what to evaluate: --run RUN_DIR (a finished `compacter train` folder), or --adapter DIR "
                         "with --model BASE.")
    config: dict[str, Any] = {}
    if request.run:
        config = finished_run(request.run)["config"]
        adapter = str(Path(request.run) / ADAPTER_DIR)
    else:
        adapter = request.adapter
    description = read_description(adapter)
    metadata = description.get("metadata") or {}
    task = task_of(description, "")
    if task is None:
        raise ValueError(f"{adapter} does not record its task (it was not saved by `compacter train`), so its labels "
                         "and metrics are unknown; evaluate a run or an adapter that `compacter train` saved.")
    base = request.model or config.get("model")
    if not base:
        raise ValueError("Say which base model the adapter goes on: --model NAME_OR_PATH (or --run RUN_DIR).")
    if config and not config.get("pretrained", True):
        raise ValueError(f"{request.run} trained on a randomly initialised base (--random-init): there is no base model "
                         "to evaluate with.")
    source = input_file(request.input, request.split)
    if source is not None:
        examples = read_labelled(source, task, file_columns(task, request.columns, config))
    elif request.run:
        examples = run_examples(request.run, request.split)
    else:
        raise ValueError("Give the labelled file to evaluate on: --input FILE (CSV, JSON lines or parquet).")
    quantize = config.get("quantize")
    model, tokenizer, _ = load_model(base, {task.name: adapter}, device=request.device,
                                     tokenizer=request.tokenizer or config.get("tokenizer"), quantize=quantize)
    lengths = {"source_length": config.get("max_source_length") or metadata.get("max_source_length")
               or DEFAULT_SOURCE_LENGTH,
               "target_length": config.get("max_target_length") or metadata.get("max_target_length")
               or DEFAULT_TARGET_LENGTH}
    batch_size = request.batch_size or config.get("eval_batch_size") or 32
    predictions, metrics = evaluate(model, tokenizer, task, examples, batch_size=batch_size,
                                    precision=config.get("precision", "fp32"), **lengths)
    about = {"adapter": adapter, "base_model": base, "run": request.run, "input": str(source or request.split),
             "split": None if source is not None else request.split, "batch_size": batch_size, **lengths}
    evaluation = Evaluation(task, metrics, predictions, examples, about)
    name = Path(source).stem if source is not None else request.split
    output = Path(request.output) if request.output else (
        Path(request.run) / f"evaluation-{name}" if request.run else Path(f"evaluation-{task.name}-{name}"))
    write_reports(evaluation, output)
    return evaluation, output


def input_file(path: str | None, split: str) -> Path | None:
    """--input: a file, or a folder's file of ``split`` (test.csv, validation.jsonl, ...)."""
    from .data.files import READERS, SPLIT_NAMES

    if path is None:
        return None
    folder = Path(path)
    if not folder.is_dir():
        return folder
    found = sorted(f for f in folder.iterdir() if f.is_file() and f.stem.lower() in SPLIT_NAMES[split]
                   and f.suffix.lower() in READERS)
    if len(found) != 1:
        raise FileNotFoundError(f"{folder} has {'no' if not found else len(found)} {split} file(s) "
                                f"({', '.join(f.name for f in found) or f'{split}.csv, {split}.jsonl, ...'}); give the "
                                "file itself as --input.")
    return found[0]


def file_columns(task: Task, given: dict[str, str | None], config: dict[str, Any]):
    """Which columns of the file hold the task's fields and label: given, else the run's, else the task's own names
    (the columns it was trained from) and "label" / "target". None: a GLUE/SuperGLUE export."""
    from .data.labelled import Columns

    if task.benchmark != "custom":
        return None
    def column(key: str, default: str | None) -> str | None:
        return given.get(key) or config.get(key) or default
    if task.labels is None:  # text-to-text
        return Columns((column("source_column", task.fields[0]),), column("target_column", "target"))
    keys = ("text_column", "text_pair_column")[: len(task.fields)]
    return Columns(tuple(column(key, name) for key, name in zip(keys, task.fields)), column("label_column", "label"))
