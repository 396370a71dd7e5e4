"""PEFT's LoRA and (IA)³ folders as compacter tasks, and compacter's LoRA and (IA)³ tasks as PEFT folders.

``load_peft(model, folder, name=...)`` reads the folder (interop/peft.py checks it against the model
first) and attaches it as a task of compacter's ``lora`` or ``ia3`` method with PEFT's weights: it
then switches, routes (a PEFT LoRA and a Compacter task in one batch), saves and unloads like any
task. ``export_peft(model, folder, name=...)`` writes a task of those methods as a folder that
``peft.PeftModel.from_pretrained`` reads with the same outputs.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..attach import attach_task, delete
from ..container import container_of
from ..methods import get_config
from ..methods.ia3 import IA3_INPUT, IA3_OUTPUT
from ..methods.lora import LORA
from ..model_anatomy import model_family
from ..pooling import refuse_mean_pooling
from ..switching import tasks
from .peft import PeftAdapter, check_fits, read_peft_folder, write_peft_folder

PEFT_TASK_TYPES = {"seq2seq": "SEQ_2_SEQ_LM", "classifier": "SEQ_CLS", "causal": "CAUSAL_LM"}


def is_peft_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a PEFT adapter (an adapter_config.json that names a ``peft_type``)."""
    import json

    path = Path(folder) / "adapter_config.json"
    try:
        return "peft_type" in json.loads(path.read_text())
    except (OSError, ValueError, TypeError):
        return False


def load_peft(model: nn.Module, folder: str | os.PathLike, *, name: str | None = None) -> nn.Module:
    """Attach the PEFT LoRA or (IA)³ adapter in ``folder`` to ``model`` as task ``name`` (default: the folder's name).
    Everything is checked before anything attaches; on any error the model is left as it was."""
    adapter = read_peft_folder(folder, model)
    name = name or Path(folder).resolve().name
    if adapter.method == "lora":
        ranks, alphas = set(adapter.rank.values()), set(adapter.alpha.values())
        if len(ranks) > 1 or len(alphas) > 1:
            raise ValueError(f"{folder} gives its layers different ranks {sorted(ranks)} or alphas {sorted(alphas)} "
                             "(rank_pattern / alpha_pattern); compacter's LoRA has one r and one lora_alpha per task.")
        config = get_config("lora", r=ranks.pop(), lora_alpha=float(alphas.pop()), use_rslora=adapter.use_rslora,
                            target_modules=adapter.targets)
    else:
        config = get_config("ia3", target_modules=adapter.targets, feedforward_modules=sorted(adapter.feedforward))
    config = get_config(config, train_head=bool(adapter.modules_to_save))
    attach_task(model, config, name=name)
    try:
        _copy_in(model, name, adapter)
    except BaseException:
        delete(model, name)
        raise
    return model


def _copy_in(model: nn.Module, name: str, adapter: PeftAdapter) -> None:
    task = container_of(model).task(name)
    with torch.no_grad():
        for kind in (LORA, IA3_INPUT, IA3_OUTPUT):
            for module, slot in task.sites.get(kind, {}).items():
                weights = adapter.weights[module]
                if kind is LORA:
                    slot.bank.A[slot.index].copy_(weights["lora_A"])
                    slot.bank.B[slot.index].copy_(weights["lora_B"])
                else:
                    slot.bank.scales[slot.index].copy_(weights["ia3_l"].flatten())
        copies = task.base_copies
        for parameter, tensor in adapter.modules_to_save.items():
            if parameter not in copies:
                raise ValueError(f"The PEFT adapter replaces {parameter!r} (modules_to_save), which compacter does not "
                                 "train as a task head on this model; compacter reads heads of classifiers only.")
            copies[parameter].copy_(tensor)
    task.prepared.invalidate()


def to_peft(model: nn.Module, name: str | None = None) -> PeftAdapter:
    """Task ``name`` (a ``lora`` or ``ia3`` task) in PEFT's neutral form."""
    task = container_of(model).task(name)
    method = task.config.kind
    if method not in ("lora", "ia3"):
        raise ValueError(f"Task {task.name!r} is a {task.config.name!r} task; PEFT folders hold LoRA and (IA)³ "
                         "adapters only. Save it with compacter.save (or export it to AdapterHub where it has one).")
    if task.config.train_layer_norms:
        raise ValueError(f"Task {task.name!r} trains the model's layer norms (train_layer_norms=True), which a PEFT "
                         "LoRA / (IA)³ folder cannot hold.")
    weights: dict[str, dict[str, torch.Tensor]] = {}
    alpha, feedforward = {}, set()
    for kind, slots in task.sites.items():
        for module, slot in slots.items():
            if kind is LORA:
                weights[module] = {"lora_A": slot.bank.A[slot.index].detach().clone(),
                                   "lora_B": slot.bank.B[slot.index].detach().clone()}
                alpha[module] = task.config.lora_alpha
            else:
                scales = slot.bank.scales[slot.index].detach().clone()
                weights[module] = {"ia3_l": scales}
                if kind is IA3_INPUT:
                    feedforward.add(module)
    saved_whole = {key: value.detach().clone() for key, value in task.base_copies.items()}
    return PeftAdapter(method, weights, alpha=alpha, use_rslora=getattr(task.config, "use_rslora", False),
                       feedforward=frozenset(feedforward), modules_to_save=saved_whole)


def export_peft(model: nn.Module, folder: str | os.PathLike, *, name: str | None = None) -> Path:
    """Write task ``name`` as a PEFT folder (``peft.PeftModel.from_pretrained(base, folder)`` reads it)."""
    refuse_mean_pooling(model, "PEFT")
    if name is None and len(tasks(model)) > 1:
        name = container_of(model).active
    adapter = to_peft(model, name)
    check_fits(adapter, model)
    family = ("classifier" if type(model).__name__.endswith("ForSequenceClassification") else
              "seq2seq" if model_family(model) == "seq2seq" else "causal")
    return write_peft_folder(folder, adapter, getattr(model, "name_or_path", None) or None, PEFT_TASK_TYPES[family])
