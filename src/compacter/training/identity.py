"""What a run is, whatever its paths are spelled like: the identity that a resumed or finished run must match.

A run's identity is what it computes from:

* the base model: its architecture (``compacter.inventory.architecture_fingerprint``) and the
  SHA-256 of its weight files (config.json, *.safetensors, *.bin, their index), or its hub name
  when it is not a local folder; for ``pretrained=False`` only its config;
* the tokenizer (a hash of its full definition: vocabulary, normaliser, special tokens);
* the task (its name, label names and input fields) and a SHA-256 of each split's examples;
* the method's resolved config and every hyper-parameter (learning rates, epochs, batch size,
  lengths, warm-up (a number, or None for the default rule), seed, training-set size, evaluation steps, precision, ...).

Paths are not part of it: ``--output-dir out/a/`` and an absolute path, ``--model ./bert`` and the
same folder copied elsewhere, a run folder copied or renamed: all are the same run. Neither is
where or how fast it runs (device, processes, FSDP, compiling, activation checkpointing, the
evaluation batch size).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from ..data import TaskData
from ..methods import get_config
from .config import TrainConfig
from .warmup import DEFAULT_RULE, PAPER_WARMUP_STEPS

FORMAT = 1
WEIGHT_FILES = ("config.json", "*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
# Settings that say where a run's inputs are (their content is in the identity instead) or how it runs.
NOT_HYPER_PARAMETERS = ("model", "task", "data_dir", "tokenizer", "pretrained", "method", "method_overrides",
                        "output_dir", "device", "eval_batch_size", "compile", "gradient_checkpointing", "fsdp",
                        "short_warmup",  # the warm-up rule is in warmup_steps (None: the default rule)
                        "report_to")


def run_identity(config: TrainConfig, data: TaskData, tokenizer, architecture: dict[str, Any]) -> dict[str, Any]:
    task = data.task
    identity = {
        "format": FORMAT,
        "base_model": {"architecture": architecture, "weights": model_weights(config.model, config.pretrained)},
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "task": {"name": task.name, "labels": list(task.labels) if task.labels else None, "fields": list(task.fields)},
        "data": {split: {"examples": len(rows), "sha256": rows_sha256(rows)} for split, rows in data.splits.items()},
        "method": get_config(config.method, **config.method_overrides).to_dict(),
        "hyper_parameters": hyper_parameters(config),
    }
    return json.loads(json.dumps(identity))  # as it reads back from a file (tuples are lists), so that they compare


# Settings added after runs were recorded: left out while unset, so that those runs keep their identity.
LEFT_OUT_WHEN_UNSET = ("quantize", "max_steps", "patience")


def hyper_parameters(config: TrainConfig) -> dict[str, Any]:
    return {key: value for key, value in config.to_dict().items() if key not in NOT_HYPER_PARAMETERS
            and not (key in LEFT_OUT_WHEN_UNSET and value is None)}


def current_warmup(saved: dict[str, Any]) -> dict[str, Any]:
    """Hyper-parameters recorded before the warm-up default changed, in today's terms.

    Such runs recorded ``short_warmup``; ``warmup_steps`` None then meant the paper's 500 steps (capped as
    today), and short_warmup a tenth of the run at most 500, today's default rule (``warmup_steps`` None).
    """
    if "short_warmup" not in saved:
        return saved
    saved = dict(saved)
    short = saved.pop("short_warmup")
    if saved.get("warmup_steps") is None and not short:
        saved["warmup_steps"] = PAPER_WARMUP_STEPS
    return saved


def model_weights(name: str, pretrained: bool) -> dict[str, Any]:
    """SHA-256 of each file the model is built from, by file name; a hub model by its name."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return {"hub": name, "pretrained": pretrained}
    patterns = WEIGHT_FILES if pretrained else ("config.json",)  # random weights come from the seed, not the files
    files = sorted({path for pattern in patterns for path in folder.glob(pattern) if path.is_file()})
    return {"files": {path.name: file_sha256(path) for path in files}, "pretrained": pretrained}


def file_sha256(path: Path) -> str:
    stat = path.stat()
    return _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)  # a sweep checks the same model files for every run
def _file_sha256(path: str, size: int, modified_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps({"class": type(tokenizer).__name__, "special": tokenizer.special_tokens_map,
                        "padding_side": tokenizer.padding_side, "truncation_side": tokenizer.truncation_side},
                       sort_keys=True, default=str)
    return hashlib.sha256((definition + extra).encode()).hexdigest()


def rows_sha256(rows: list[dict]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two identities, one line each, in words."""
    if saved.get("format") != current.get("format"):
        return [f"the run was recorded in identity format {saved.get('format')!r}; this compacter writes {FORMAT}"]
    lines = []
    old_model, new_model = saved["base_model"], current["base_model"]
    lines += [f"base model {key}: {old!r} there, {new!r} now"
              for key, old, new in _changed(old_model["architecture"], new_model["architecture"])]
    lines += _weights_differences(old_model["weights"], new_model["weights"])
    if saved["tokenizer"] != current["tokenizer"]:
        lines.append("tokenizer: another vocabulary or tokenization")
    same_examples = saved["data"] == current["data"]  # a data file copied under another name: the same task
    lines += [f"task {key}: {old!r} there, {new!r} now" for key, old, new in _changed(saved["task"], current["task"])
              if not (key == "name" and same_examples)]
    for split in sorted(set(saved["data"]) | set(current["data"])):
        old, new = saved["data"].get(split), current["data"].get(split)
        if old is None or new is None:
            lines.append(f"data: the {split} split is {'new' if old is None else 'gone'}")
        elif old != new:
            count = (f"{old['examples']} examples there, {new['examples']} now" if old["examples"] != new["examples"]
                     else "as many examples, other content")
            lines.append(f"data: the {split} split changed ({count})")
    lines += [f"method setting {key}: {old!r} there, {new!r} now"
              for key, old, new in _changed(saved["method"], current["method"])]
    lines += [f"{key}: {_setting(key, old)} there, {_setting(key, new)} now"
              for key, old, new in _changed(current_warmup(saved["hyper_parameters"]), current["hyper_parameters"])]
    return lines


def _setting(key: str, value: Any) -> str:
    return f"None ({DEFAULT_RULE})" if key == "warmup_steps" and value is None else repr(value)


def legacy_differences(saved_config: dict[str, Any], config: TrainConfig) -> list[str]:
    """For results of earlier versions (no identity recorded): the settings that can still be compared."""
    current = {**hyper_parameters(config), "method": config.method, "method_overrides": config.method_overrides}
    saved_config = current_warmup(saved_config)
    return [f"{key}: {_setting(key, saved_config.get(key))} there, {_setting(key, value)} now"
            for key, value in current.items() if key in saved_config and saved_config[key] != value]


def _changed(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    return [(key, old.get(key), new.get(key)) for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def _weights_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    if old == new:
        return []
    if old.get("pretrained") != new.get("pretrained"):
        return [f"base model weights: {'pretrained' if old.get('pretrained') else 'random'} there, "
                f"{'pretrained' if new.get('pretrained') else 'random'} now"]
    if "hub" in old or "hub" in new:
        return [f"base model: {_source(old)} there, {_source(new)} now"]
    lines = []
    for name in sorted(set(old["files"]) | set(new["files"])):
        if name not in old["files"]:
            lines.append(f"base model: its file {name} is new")
        elif name not in new["files"]:
            lines.append(f"base model: its file {name} is gone")
        elif old["files"][name] != new["files"][name]:
            lines.append(f"base model: its file {name} has other content")
    return lines


def _source(weights: dict[str, Any]) -> str:
    return f"hub model {weights['hub']!r}" if "hub" in weights else "a local folder"
