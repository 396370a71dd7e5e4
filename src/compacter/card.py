"""The model card (README.md) of a saved task, through huggingface_hub's ModelCard / ModelCardData.

Its metadata is what the Hub indexes: library_name, base_model (a Hub id, never a local path),
license, pipeline_tag, tags, the task's labels, and a model-index with the task's metrics, the test
split's where one was scored and otherwise the validation split's, each named as such.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

PROJECT_URL = "https://pypi.org/project/compacter-adapters/"
PLACEHOLDER = "path/or/hub-id/of/this/folder"  # push_to_hub puts the repo id in its place
DEFAULT_LICENSE = "apache-2.0"  # compacter's own; metadata["license"] overrides it
PIPELINES = (("ForSequenceClassification", "text-classification"), ("ForTokenClassification", "token-classification"),
             ("ForQuestionAnswering", "question-answering"), ("ForConditionalGeneration", "text2text-generation"),
             ("ForSeq2SeqLM", "text2text-generation"), ("ForCausalLM", "text-generation"),
             ("LMHeadModel", "text-generation"), ("ForMaskedLM", "fill-mask"))


def hub_id(base: str | None) -> str | None:
    """``base`` if it reads as a Hub id; a local folder's recorded Hub name (its config's _name_or_path), else None."""
    if not base:
        return None
    path = Path(base)
    if path.is_absolute() or path.exists() or base.startswith((".", "~")):
        config = path / "config.json"
        try:
            recorded = json.loads(config.read_text()).get("_name_or_path") if config.is_file() else None
        except (OSError, ValueError):
            recorded = None
        return recorded if recorded and not Path(recorded).is_absolute() and not Path(recorded).exists() else None
    return base if len(base.split("/")) <= 2 else None


def pipeline_tag(model_class: str | None) -> str:
    for suffix, tag in PIPELINES:
        if model_class and model_class.endswith(suffix):
            return tag
    return "feature-extraction"


def _metrics(metadata: dict[str, Any]) -> tuple[str, dict[str, float]]:
    split = "test" if isinstance(metadata.get("test"), dict) else "validation"
    values = metadata.get(split) or {}
    return split, {key: value for key, value in values.items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("n", "invalid")}


def model_card(name: str, description: dict[str, Any], trained: int, total: int, labels: list[str] | None) -> str:
    """README.md text for a saved task (``description`` as in compacter_config.json)."""
    metadata = description.get("metadata") or {}
    task = metadata.get("task") if isinstance(metadata.get("task"), dict) else {}
    task_name = task.get("name") or name
    labels = task.get("labels") or labels
    method = description["method"]["name"]
    base = hub_id(description.get("base_model_name_or_path"))
    split, metrics = _metrics(metadata)
    eval_results = [EvalResult(task_type=pipeline_tag((description.get("base_model") or {}).get("class")),
                               dataset_type=task_name, dataset_name=task_name, dataset_split=split,
                               metric_type=key, metric_name=f"{key} ({split})", metric_value=round(float(value), 4))
                    for key, value in metrics.items()]
    percent = 100 * trained / total if total else 0.0
    data = ModelCardData(
        library_name="compacter", base_model=base, license=metadata.get("license") or DEFAULT_LICENSE,
        pipeline_tag=pipeline_tag((description.get("base_model") or {}).get("class")),
        tags=["compacter", method, "parameter-efficient-fine-tuning", "adapter"],
        model_name=f"{task_name}-{method}" if eval_results else None, eval_results=eval_results or None,
        compacter={"method": method, "task": task_name, "saved_as": name, "trained_parameters": trained,
                   "trained_percent": round(percent, 4), **({"labels": list(labels)} if labels else {})})
    base_text = f"[{base}](https://huggingface.co/{base})" if base else "its base model"
    usage = (f'model = compacter.from_pretrained("{base}", "{PLACEHOLDER}")' if base else
             f'model = compacter.load(base_model, "{PLACEHOLDER}")  # base_model: the one it was trained on')
    lines = [f"# {task_name}: {method} on {base_text}", "",
             f"A task trained with [compacter]({PROJECT_URL}) (`pip install compacter-adapters`): {trained:,} trained "
             f"parameters, {percent:.4f}% of the base model's {total:,}. The folder holds only them.", "",
             "```python", "import compacter", "", usage, "```"]
    if labels:
        lines += ["", f"Labels: {', '.join(map(str, labels))}."]
    if metrics:
        lines += ["", f"| metric ({split} split) | value |", "|---|---:|",
                  *(f"| {key} | {value:.2f} |" for key, value in metrics.items())]
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + "\n".join(lines) + "\n").content
