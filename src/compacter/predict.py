"""`compacter predict`: requests for many tasks through one frozen base model, in mixed batches.

Each request is a JSON object naming its task (an adapter given as ``NAME=DIR``) and giving its
input: ``"text"`` (and for a sentence-pair classifier ``"text_pair"``), or the task's own fields
(``"sentence1"``, ``"sentence2"`` for RTE ...), formatted the way the task was trained. Requests
are taken in their order, ``batch_size`` at a time, each batch one forward pass (or one
``generate``) with every row routed to its own task's adapters. The answers are label names (a
classifier's or a text-to-text model's), a score (STS-B-like regression) or generated text, one
JSON line per request in the input's order, as ``{"task": ..., "prediction": ...}`` (with the
request's ``"id"`` when it has one), which `compacter score` reads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

from . import api, hub
from .data.loading import json_lines
from .data.tasks import TASKS, Task
from .decoding import batch_answers, uncompilable_reason
from .heads import labels_from
from .model_anatomy import model_family
from .quantization import BITSANDBYTES_KINDS, check_quantization, quantize_base
from .saving import read_description
from .switching import route, set_active, tasks, unroutable_reason

log = logging.getLogger("compacter")
DEFAULT_SOURCE_LENGTH = 512
DEFAULT_TARGET_LENGTH = 16


@dataclass
class Served:
    """A loaded task: how its requests are formatted and its answers read."""

    name: str
    task: Task | None  # None: free text in, free text (or a class index or its saved label name) out
    labels: list[str] | None = None  # a classifier's saved label names


class RequestError(ValueError):
    """A request line that cannot be served; says which line and why."""


def task_of(description: dict[str, Any], name: str) -> Task | None:
    """The task an adapter was trained for: recorded by `compacter train`, else a GLUE/SuperGLUE task of that name."""
    recorded = (description.get("metadata") or {}).get("task")
    if isinstance(recorded, dict):
        return Task.from_dict(recorded)
    for candidate in (recorded, name):
        if isinstance(candidate, str) and candidate in TASKS:
            return TASKS[candidate]
    return None


def load_model(base: str, adapters: dict[str, str | os.PathLike], *, device: str | None = None,
               tokenizer: str | None = None, quantize: str | None = None) -> tuple[nn.Module, Any, dict[str, Served]]:
    """The base model with every adapter on it, its tokenizer, and how each task reads and answers.

    ``quantize``: int8 / int4 / nf4 / bnb-int8 stores the frozen base in 8 or 4 bits (quantization.py);
    adapters trained on a full-precision base load onto it and back.
    """
    if not adapters:
        raise ValueError("Give at least one adapter: --adapter NAME=DIR.")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if quantize is not None:
        check_quantization(quantize, device)  # before anything loads
    adapters = {name: hub.resolve(directory) for name, directory in adapters.items()}  # a Hub id: its cached download
    descriptions = {name: read_description(directory) for name, directory in adapters.items()}
    classes = {d["base_model"].get("class") for d in descriptions.values()}
    if len(classes) > 1:  # classifiers of other label counts share one base: each task has its own head (heads.py)
        raise ValueError(f"The adapters were trained on different kinds of model ({sorted(map(str, classes))}); one "
                         "base model serves only adapters of one kind.")
    model = api.base_model_for(next(iter(adapters.values())), base)
    if quantize is not None:  # before the adapters attach to the base's modules
        quantize_base(model, quantize, device=device if quantize in BITSANDBYTES_KINDS else None)
    for name, directory in adapters.items():
        api.load(model, directory, name=name)
    model.to(device).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer or base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, {name: Served(name, task_of(d, name), _label_names(d)) for name, d in descriptions.items()}


def _label_names(description: dict[str, Any]) -> list[str] | None:
    """A classifier's saved label names (None where it has none but transformers' LABEL_0 ...)."""
    count = description.get("num_labels")
    if not count:
        return None
    names = list(labels_from(description, count)["id2label"].values())
    return None if names == [f"LABEL_{i}" for i in range(count)] else names


def read_requests(path: str | os.PathLike, served: dict[str, Served], default_task: str | None = None) -> list[dict]:
    """The request lines, each checked: a JSON object, a known task, an input for it."""
    requests = []
    for line, request in enumerate(json_lines(path), start=1):
        name = request.get("task", default_task)
        if not isinstance(name, str):
            raise RequestError(f"{path}, request {line}: \"task\" must be the name of one of the adapters given "
                               f"({', '.join(served)}), got {type(name).__name__} {name!r}.")
        if name not in served:
            raise RequestError(f"{path}, request {line}: task {name!r} is not one of the adapters given "
                               f"({', '.join(served)}). Name it with \"task\", or add --adapter {name}=DIR.")
        request = {**request, "task": name}
        _check_input(request, served[name], f"{path}, request {line}")
        requests.append(request)
    if not requests:
        raise RequestError(f"{path} holds no requests.")
    return requests


def _check_input(request: dict, served: Served, where: str) -> None:
    """A request gives its input as "text" (and "text_pair"), or as its task's own fields."""
    if "text" in request:
        text, pair = request["text"], request.get("text_pair")
        if not isinstance(text, str) or (pair is not None and not isinstance(pair, str)):
            raise RequestError(f"{where}: \"text\" (and \"text_pair\") must be strings.")
        return
    task = served.task
    if task is None:
        raise RequestError(f"{where}: give the input as \"text\"; task {served.name!r} has no fields of its own.")
    missing = [f for f in task.fields if f not in request]
    if missing:
        raise RequestError(f"{where}: task {task.name!r} needs the field(s) {missing} (or a \"text\").")


def _texts(requests: list[dict], served: dict[str, Served], text_to_text: bool) -> tuple[list[str], list[str] | None]:
    sources, pairs = [], []
    for request in requests:
        task = served[request["task"]].task
        if "text" in request:
            sources.append(request["text"])
            pairs.append(request.get("text_pair"))
        elif text_to_text:
            sources.append(task.source(request))
            pairs.append(None)
        else:
            text, pair = task.classification_texts(request)
            sources.append(text)
            pairs.append(pair)
    if all(p is None for p in pairs):
        return sources, None
    if any(p is None for p in pairs):
        raise RequestError("A batch mixes single texts and text pairs; give every request of a pair task its pair.")
    return sources, pairs


def batches(requests: list[dict], size: int, mixed: bool) -> list[list[int]]:
    """Request indices per batch: in input order (mixed tasks), or task by task when tasks cannot share a batch."""
    if size < 1:
        raise ValueError(f"The batch size must be at least 1, got {size}.")
    order = list(range(len(requests)))
    if not mixed:
        order.sort(key=lambda i: list(dict.fromkeys(r["task"] for r in requests)).index(requests[i]["task"]))
        groups: list[list[int]] = []
        for i in order:
            if groups and requests[groups[-1][0]]["task"] == requests[i]["task"] and len(groups[-1]) < size:
                groups[-1].append(i)
            else:
                groups.append([i])
        return groups
    return [order[i: i + size] for i in range(0, len(order), size)]


@torch.no_grad()
def predict(model: nn.Module, tokenizer, requests: list[dict], served: dict[str, Served], *, batch_size: int = 32,
            source_length: int = DEFAULT_SOURCE_LENGTH, target_length: int = DEFAULT_TARGET_LENGTH,
            compile: bool = False, compile_backend: str = "inductor",
            progress: Callable[[Iterable], Iterable] = lambda x: x) -> list[dict]:
    """One answer per request, in the requests' order (see the module docstring).

    ``compile``: decode with a static KV cache and a compiled step (``compacter.compiled_generate``); inputs are
    padded to a multiple of 32 tokens, so that batches of other lengths reuse a few compiled shapes;
    ``compile_backend``: torch.compile's.
    """
    text_to_text = model_family(model) == "seq2seq"
    if compile and not text_to_text:
        log.warning("--compile: %s", uncompilable_reason(model) or "this model does not decode")
        compile = False
    mixed = len(tasks(model)) > 1 and not any(unroutable_reason(model, name) for name in tasks(model))
    device = next(model.parameters()).device
    answers: list[dict | None] = [None] * len(requests)
    for indices in progress(batches(requests, batch_size, mixed)):
        part = [requests[i] for i in indices]
        sources, pairs = _texts(part, served, text_to_text)
        encoded = tokenizer(sources, pairs, max_length=source_length, truncation=True, padding=True,
                            pad_to_multiple_of=32 if compile else None, return_tensors="pt").to(device)
        names = [r["task"] for r in part]
        if not mixed:
            set_active(model, names[0])
        with route(model, names) if mixed else contextlib.nullcontext():
            outputs = batch_answers(model, tokenizer, encoded, text_to_text=text_to_text, max_new_tokens=target_length,
                                    compile_backend=compile_backend if compile else None)
        for index, request, output in zip(indices, part, outputs):
            task, labels = served[request["task"]].task, served[request["task"]].labels
            if task is not None:
                output = task.decode(output)
            elif isinstance(output, float):
                output = f"{output:.4f}"
            elif isinstance(output, int) and labels:
                output = labels[output]
            answer = {"task": request["task"], "prediction": output}
            if "id" in request:
                answer = {"id": request["id"], **answer}
            answers[index] = answer
    return answers


def write_answers(path: str | os.PathLike, answers: list[dict]) -> None:
    from .io import atomic_write

    if Path(path).is_dir():
        raise ValueError(f"--output {path} is a folder; give the path of the file to write, e.g. "
                         f"{Path(path) / 'answers.jsonl'}.")
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text("".join(json.dumps(a) + "\n" for a in answers)))
