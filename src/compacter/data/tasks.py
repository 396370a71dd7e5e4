"""The 14 GLUE and SuperGLUE tasks: their original files, hub names, labels, templates and metrics.

Every example is a dict with the Hugging Face hub's column names (whatever the source) and
becomes an input string and a target string in the style of T5 and the authors' code:
``"<task> <field>: <value> <field>: <value> ..."`` → the label's name. STS-B's score is rounded to
the nearest 0.2 and written as text ("3.2"). The templates are deterministic and documented here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Task:
    name: str
    benchmark: str  # "glue" or "super_glue"
    hub_config: str
    fields: tuple[str, ...]  # input columns, in template order
    labels: tuple[str, ...] | None  # label names by id; None: a regression (STS-B) or free text (ReCoRD)
    metrics: tuple[str, ...]
    large: bool = False  # ≥ 10k training examples: validation is taken from train (SPEC §4)
    original_files: dict[str, str] = field(default_factory=dict)  # split → file name in the original release
    classification_fields: tuple[str, ...] | None = None  # text (pair) of the classification view
    group_key: str | None = None  # examples grouped for splitting and metrics (MultiRC, ReCoRD)
    template_name: str | None = None  # a template of TEMPLATES other than the task's own

    @property
    def hub_splits(self) -> dict[str, str]:
        """Our raw split name → the hub's."""
        if self.name == "mnli":
            return {"train": "train", "validation_matched": "validation_matched",
                    "validation_mismatched": "validation_mismatched"}
        return {"train": "train", "validation": "validation"}

    def template(self, example: dict) -> tuple[str, str]:
        return TEMPLATES.get(self.template_name or self.name, _fields_template)(self, example)

    def target(self, example: dict) -> str:
        return self.template(example)[1]

    def source(self, example: dict) -> str:
        """The input string of an example that has no label (a request to answer)."""
        placeholder = {"label": 0, "answers": [], "entities": [], "source": "", "target": ""}
        return self.template({**placeholder, **example})[0]

    def classification_texts(self, example: dict) -> tuple[str, str | None]:
        """The text (and its pair) that a classification head reads, in training and in serving alike."""
        values = [str(example[name]) for name in self.classification_fields or self.fields]
        return values[0], values[1] if len(values) > 1 else None

    def decode(self, answer: str | int | float) -> str:
        """A model's answer as the task's text: a class index becomes its label, a score is written with 4 decimals,
        generated text stays as it is."""
        if isinstance(answer, str):
            return answer
        if isinstance(answer, float):
            return f"{answer:.4f}"
        return self.labels[answer] if self.labels else str(answer)

    def to_dict(self) -> dict:
        """What a saved adapter records of its task, so that requests are formatted as in training."""
        return {"name": self.name, "benchmark": self.benchmark, "fields": list(self.fields),
                "labels": None if self.labels is None else list(self.labels), "metrics": list(self.metrics),
                "classification_fields": None if self.classification_fields is None else list(self.classification_fields),
                "template_name": self.template_name}

    @classmethod
    def from_dict(cls, fields: dict) -> Task:
        if fields.get("name") in TASKS and fields.get("benchmark") != "custom":
            return TASKS[fields["name"]]
        tuples = {key: tuple(value) if isinstance(value, list) else value for key, value in fields.items()}
        return cls(tuples["name"], tuples.get("benchmark", "custom"), "", tuples.get("fields", ()), tuples.get("labels"),
                   tuples.get("metrics", ()), classification_fields=tuples.get("classification_fields"),
                   template_name=tuples.get("template_name"))


def _label_text(task: Task, label) -> str:
    if task.labels is None:
        return str(label)
    return task.labels[int(label)]


def _source(task: Task, example: dict) -> str:
    return " ".join([task.name] + [f"{name}: {example[name]}" for name in task.fields])


def _fields_template(task: Task, example: dict) -> tuple[str, str]:
    return _source(task, example), _label_text(task, example["label"])


def round_stsb(score: float) -> str:
    """STS-B's similarity to the nearest 0.2, as text: 3.17 → "3.2" (SPEC §4).

    Python's round() breaks ties to even, as the authors' code (and T5's tf.round) did: 0.1 → "0.0".
    """
    return f"{round(float(score) * 5) / 5:.1f}"


def _stsb(task: Task, example: dict) -> tuple[str, str]:
    return _source(task, example), round_stsb(example["label"])


def _copa(task: Task, example: dict) -> tuple[str, str]:
    # the question says whether the premise's cause or its effect is asked for: keep it
    source = (f"copa premise: {example['premise']} question: {example['question']} "
              f"choice1: {example['choice1']} choice2: {example['choice2']}")
    return source, _label_text(task, example["label"])


def _record(task: Task, example: dict) -> tuple[str, str]:
    entities = ", ".join(example["entities"])
    source = f"record query: {example['query']} entities: {entities} passage: {example['passage']}"
    answers = example["answers"]
    return source, answers[0] if answers else ""


def _multirc(task: Task, example: dict) -> tuple[str, str]:
    source = (f"multirc question: {example['question']} answer: {example['answer']} "
              f"paragraph: {example['paragraph']}")
    return source, _label_text(task, example["label"])


def _passthrough(task: Task, example: dict) -> tuple[str, str]:
    return example["source"], example["target"]  # your own text-to-text data, used verbatim


TEMPLATES: dict[str, Callable[[Task, dict], tuple[str, str]]] = {
    "stsb": _stsb, "copa": _copa, "record": _record, "multirc": _multirc, "passthrough": _passthrough,
}

_NLI = ("entailment", "not_entailment")
TASKS: dict[str, Task] = {task.name: task for task in [
    Task("cola", "glue", "cola", ("sentence",), ("unacceptable", "acceptable"), ("matthews_correlation",),
         original_files={"train": "CoLA/train.tsv", "validation": "CoLA/dev.tsv"},
         classification_fields=("sentence",)),
    Task("sst2", "glue", "sst2", ("sentence",), ("negative", "positive"), ("accuracy",), large=True,
         original_files={"train": "SST-2/train.tsv", "validation": "SST-2/dev.tsv"},
         classification_fields=("sentence",)),
    Task("mrpc", "glue", "mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("f1", "accuracy"),
         original_files={"train": "MRPC/train.tsv", "validation": "MRPC/dev.tsv"},
         classification_fields=("sentence1", "sentence2")),
    Task("qqp", "glue", "qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), ("f1", "accuracy"),
         large=True, original_files={"train": "QQP/train.tsv", "validation": "QQP/dev.tsv"},
         classification_fields=("question1", "question2")),
    Task("stsb", "glue", "stsb", ("sentence1", "sentence2"), None, ("pearson", "spearman"),
         original_files={"train": "STS-B/train.tsv", "validation": "STS-B/dev.tsv"},
         classification_fields=("sentence1", "sentence2")),
    Task("mnli", "glue", "mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
         ("accuracy",), large=True,
         original_files={"train": "MNLI/train.tsv", "validation_matched": "MNLI/dev_matched.tsv",
                         "validation_mismatched": "MNLI/dev_mismatched.tsv"},
         classification_fields=("premise", "hypothesis")),
    Task("qnli", "glue", "qnli", ("question", "sentence"), _NLI, ("accuracy",), large=True,
         original_files={"train": "QNLI/train.tsv", "validation": "QNLI/dev.tsv"},
         classification_fields=("question", "sentence")),
    Task("rte", "glue", "rte", ("sentence1", "sentence2"), _NLI, ("accuracy",),
         original_files={"train": "RTE/train.tsv", "validation": "RTE/dev.tsv"},
         classification_fields=("sentence1", "sentence2")),
    Task("boolq", "super_glue", "boolq", ("question", "passage"), ("False", "True"), ("accuracy",),
         original_files={"train": "BoolQ/train.jsonl", "validation": "BoolQ/val.jsonl"},
         classification_fields=("question", "passage")),
    Task("cb", "super_glue", "cb", ("premise", "hypothesis"), ("entailment", "contradiction", "neutral"),
         ("f1_macro", "accuracy"), original_files={"train": "CB/train.jsonl", "validation": "CB/val.jsonl"},
         classification_fields=("premise", "hypothesis")),
    Task("copa", "super_glue", "copa", ("premise", "question", "choice1", "choice2"), ("choice1", "choice2"),
         ("accuracy",), original_files={"train": "COPA/train.jsonl", "validation": "COPA/val.jsonl"}),
    Task("multirc", "super_glue", "multirc", ("question", "answer", "paragraph"), ("False", "True"),
         ("f1a", "exact_match"), original_files={"train": "MultiRC/train.jsonl", "validation": "MultiRC/val.jsonl"},
         group_key="paragraph"),
    Task("record", "super_glue", "record", ("query", "entities", "passage"), None, ("f1", "exact_match"),
         large=True, original_files={"train": "ReCoRD/train.jsonl", "validation": "ReCoRD/val.jsonl"},
         group_key="passage"),
    Task("wic", "super_glue", "wic", ("word", "sentence1", "sentence2"), ("False", "True"), ("accuracy",),
         original_files={"train": "WiC/train.jsonl", "validation": "WiC/val.jsonl"},
         classification_fields=("sentence1", "sentence2")),
]}

HUB_DATASETS = {"glue": "nyu-mll/glue", "super_glue": "aps/super_glue"}


def get_task(name: str) -> Task:
    key = name.lower().replace("-", "").replace("_", "")
    aliases = {"sst": "sst2", "sts": "stsb"}
    key = aliases.get(key, key)
    if key not in TASKS:
        raise ValueError(f"Unknown task {name!r}. Known tasks: {', '.join(TASKS)} (WNLI is not part of the paper).")
    return TASKS[key]

