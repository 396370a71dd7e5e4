"""AdapterHub (`adapters`) bottleneck adapters in and out: Houlsby, Pfeiffer, PHM, Compacter, Compacter++.

An AdapterHub folder (``save_adapter``) holds ``adapter_config.json`` (``{"config": {...}, "model_class",
"version": "adapters.X"}``), the weights as ``pytorch_adapter.bin`` (read with torch's weights-only
loader: nothing in a file runs code) or ``adapter.safetensors``, and optionally a prediction head
(``head_config.json`` + ``pytorch_model_head.bin`` / ``model_head.safetensors``).

The weights map exactly. AdapterHub's PHM layer computes ``y = x @ H + b`` with
``H = Σ_i rule_i ⊗ (W_left_i @ W_right_i)`` of shape (in, out); ours computes ``F.linear(x, W)`` with
``W = Σ_h A_h ⊗ (s_h t_hᵀ)`` of shape (out, in). Since ``(P ⊗ Q)ᵀ = Pᵀ ⊗ Qᵀ``, ``W = Hᵀ`` when
``A_h = rule_hᵀ``, ``s_h = W_right_hᵀ`` and ``t_h = W_left_h`` (a full ``W_h``: ``B_h = W_hᵀ``).

Placement. AdapterHub's ``original_ln_before=False`` / ``residual_before_ln=True`` (Houlsby, Compacter,
PHM) is our default (``adapter_input="sublayer_output"``): for a BERT sublayer with output
``h = dropout(dense(·))``, input ``x`` and layer norm LN, ``y = LN(h + U(f(D(h))) + x)``. Its
``original_ln_before=True`` (Pfeiffer ``seq_bn``, Compacter++) computes ``a = LN(h + x)``,
``o = h + U(f(D(a)))`` (the residual is still ``h``), ``y = LN(o + x)``: the adapter reads the normalised
sum, which is our ``adapter_input="layer_normed_sum"``. Either way ``residual_before_ln`` must be True
(its ``"post_add"`` or False put another residual around the adapter and are refused).

Heads (adapterhub_heads.py). A BERT sequence classifier is ``classifier(dropout(tanh(pooler.dense(h_CLS))))``:
AdapterHub's ``ClassificationHead(layers=1, use_pooler=True)``; its default head (``layers=2``,
``use_pooler=False``, tanh: its own dense + tanh on ``h_CLS``, then the output layer) is the same
classifier over a pooler of the task's own (``train_pooler=True``). Other heads are refused.

Export (``compacter.export(model, folder, format="adapterhub")``) is adapterhub_export.py.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..attach import attach_task, delete
from ..container import container_of
from ..methods import AdapterConfig
from ..methods.adapters import bottleneck_slots
from .adapterhub_heads import HEAD_CONFIG_FILE, head_layers, head_tensors

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILES = ("adapter.safetensors", "pytorch_adapter.bin")
HEAD_WEIGHTS_FILES = ("model_head.safetensors", "pytorch_model_head.bin")
BERT_FAMILY = ("bert", "roberta", "xlm-roberta", "electra")
# AdapterHub's activation names → ours
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_new", "relu": "relu", "swish": "silu", "silu": "silu", "tanh": "tanh"}
# Options whose value must be the one we reproduce, with that value
REQUIRED = {"original_ln_after": True, "residual_before_ln": True,
            "adapter_residual_before_ln": False, "ln_before": False, "ln_after": False, "is_parallel": False,
            "scaling": 1.0, "use_gating": False, "inv_adapter": None, "cross_adapter": False, "stochastic_depth": 0.0,
            "factorized_phm_rule": False, "shared_W_phm": False, "phm_bias": True}
SITE = re.compile(r"layer\.(\d+)\.(attention\.output|output)\.adapters\.[^.]+\.(adapter_down\.0|adapter_up)\.(\w+)$")
SHARED_RULE = re.compile(r"shared_parameters\.[^.]+\.phm_rule$")
SUBLAYER = {"attention.output": "attention", "output": "feed_forward"}


@dataclass
class Folder:
    """An AdapterHub folder, read and checked."""

    path: Path
    description: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    head: dict[str, Any] | None
    head_tensors: dict[str, torch.Tensor]

    @property
    def options(self) -> dict[str, Any]:
        return self.description["config"]


def is_adapterhub_folder(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` was written by AdapterHub's ``save_adapter`` (its config names an adapters version)."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        return False
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(description, dict) and str(description.get("version", "")).startswith("adapters.") \
        and isinstance(description.get("config"), dict)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the AdapterHub folder is damaged.") from None
    if not isinstance(value, dict) or not isinstance(value.get("config"), dict):
        raise ValueError(f"{path} must hold a JSON object with a 'config' object, as AdapterHub writes it.")
    return value


def _read_weights(directory: Path, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    for file_name in names:
        path = directory / file_name
        if not path.is_file():
            continue
        try:
            if file_name.endswith(".safetensors"):
                return load_file(str(path))
            tensors = torch.load(path, map_location="cpu", weights_only=True)  # nothing a file holds may run code
        except (SafetensorError, OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as error:
            raise ValueError(f"{path} could not be read as tensors ({str(error).splitlines()[0][:200]}); the file is "
                             "damaged or holds more than tensors (a pickle compacter refuses to run).") from None
        if not (isinstance(tensors, dict) and all(isinstance(t, torch.Tensor) for t in tensors.values())):
            raise ValueError(f"{path} does not hold a name → tensor mapping.")
        return tensors
    raise FileNotFoundError(f"{directory} holds no AdapterHub weights ({' or '.join(names)}).")


def read(directory: str | os.PathLike) -> Folder:
    directory = Path(directory)
    description = _read_json(directory / CONFIG_FILE)
    tensors = _read_weights(directory, WEIGHTS_FILES)
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{directory}: tensor {key!r} holds NaN or infinite values.")
    head, head_weights = None, {}
    if (directory / HEAD_CONFIG_FILE).is_file():
        head = _read_json(directory / HEAD_CONFIG_FILE)
        head_weights = _read_weights(directory, HEAD_WEIGHTS_FILES)
    return Folder(directory, description, tensors, head, head_weights)


def method_config(folder: Folder, num_layers: int) -> AdapterConfig:
    """Our adapter config for the folder's, or a ValueError naming the first option we cannot reproduce."""
    options, where = folder.options, folder.path / CONFIG_FILE
    if options.get("architecture") not in (None, "bottleneck") or "mh_adapter" not in options:
        raise ValueError(f"{where}: compacter reads AdapterHub's bottleneck adapters (Houlsby, Pfeiffer, PHM, "
                         f"Compacter, Compacter++); this is a {options.get('architecture')!r} adapter.")
    shared_rule = bool(options.get("phm_layer")) and options.get("shared_phm_rule", True)
    if shared_rule and not any(SHARED_RULE.search(key) for key in folder.tensors):
        raise ValueError(
            f"{folder.path} is a Compacter with shared_phm_rule=True, but it does not hold the shared PHM rule (the "
            "n×n×n A that every layer's adapter uses, 'shared_parameters.<name>.phm_rule'): without it the adapter "
            "computes something else (AdapterHub's own load_adapter of such a folder does too). Save the adapter "
            "again from the model that holds the rule (adapters 1.3's save_adapter writes it), or train with "
            "shared_phm_rule=False.")
    for option, value in REQUIRED.items():
        if option in options and options[option] != value:
            raise ValueError(f"{where}: AdapterHub option {option}={options[option]!r} has no counterpart in "
                             f"compacter (it reproduces {option}={value!r}); this adapter cannot be loaded.")
    if options.get("non_linearity", "").lower() not in ACTIVATIONS:
        raise ValueError(f"{where}: AdapterHub option non_linearity={options.get('non_linearity')!r} has no "
                         f"counterpart in compacter (it has {sorted(ACTIVATIONS)}).")
    layers = head_layers(folder.head, folder.path)
    factor = options["reduction_factor"]
    if isinstance(factor, dict):
        if len(set(factor.values())) != 1:
            raise ValueError(f"{where}: AdapterHub option reduction_factor={factor!r} (per layer) has no counterpart "
                             "in compacter, whose bottleneck is the same in every layer.")
        factor = next(iter(factor.values()))
    sublayers = [s for s, on in (("attention", options["mh_adapter"]), ("feed_forward", options["output_adapter"])) if on]
    if not sublayers:
        raise ValueError(f"{where}: the adapter has neither mh_adapter nor output_adapter set: it adapts nothing.")
    hidden = int(folder.description.get("hidden_size") or 0)
    bottleneck = max(1, int(hidden // float(factor))) if hidden else None
    phm = bool(options.get("phm_layer"))
    fields: dict[str, Any] = {
        "projection": "phm" if phm else "dense", "reduction_factor": float(factor), "bottleneck_size": bottleneck,
        "sublayers": sublayers, "activation": ACTIVATIONS[options["non_linearity"].lower()],
        "train_layer_norms": False, "train_head": folder.head is not None, "train_pooler": layers == 2,
        "name": "adapterhub",
        "adapter_input": "layer_normed_sum" if options.get("original_ln_before") else "sublayer_output",
    }
    if phm:
        fields.update(n=int(options["phm_dim"]), share_A=bool(shared_rule),
                      rank=int(options["phm_rank"]) if options.get("factorized_phm_W", True) else None)
    if options.get("leave_out"):
        fields["layers"] = sorted(set(range(num_layers)) - {int(i) for i in options["leave_out"]})
    return AdapterConfig(**fields)


def _ours(site_key: str) -> tuple[int, str] | None:
    match = re.search(r"layer\.(\d+)\.(attention\.output|output)\.dense$", site_key)
    return (int(match.group(1)), SUBLAYER[match.group(2)]) if match else None


def _mapped(bank_kind: str, key: str, tensor: torch.Tensor) -> tuple[str, torch.Tensor]:
    """One AdapterHub projection tensor as (our bank's attribute, its value in one slot)."""
    if bank_kind == "dense":
        return key, tensor  # nn.Linear's weight (out, in) and bias, as ours
    attribute, transposed = {"phm_rule": ("A", True), "W_left": ("t", False), "W_right": ("s", True),
                             "W": ("B", True), "b": ("bias", False)}.get(key, (key, False))  # unknown: refused by _fill
    return attribute, tensor.transpose(-1, -2) if transposed else tensor


def load(model: nn.Module, directory: str | os.PathLike, *, name: str | None = None) -> nn.Module:
    """Attach an AdapterHub folder to ``model`` as task ``name`` (default: its AdapterHub name)."""
    folder = read(directory)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in BERT_FAMILY or folder.description.get("model_type") not in (None, *BERT_FAMILY):
        raise ValueError(f"compacter reads AdapterHub adapters of BERT-family encoders ({', '.join(BERT_FAMILY)}); "
                         f"this model is {model_type!r} and the adapter was saved for "
                         f"{folder.description.get('model_type')!r}.")
    head = head_tensors(model, folder.head, folder.head_tensors, folder.path)
    config = method_config(folder, model.config.num_hidden_layers)
    name = name or folder.description.get("name") or "default"
    attach_task(model, config, name=name)
    try:
        _fill(model, name, folder, head)
    except BaseException:
        delete(model, name)
        raise
    return model


def _fill(model: nn.Module, name: str, folder: Folder, head: dict[str, torch.Tensor]) -> None:
    task = container_of(model).task(name)
    slots = {}
    for key, slot in bottleneck_slots(task).items():
        site = _ours(key)
        if site is None:
            raise ValueError(f"The adapter site {key} is not a BERT layer's attention or feed-forward output.")
        slots[site] = slot
    updates: list[tuple[torch.Tensor, torch.Tensor]] = []
    seen = set()
    for key, tensor in folder.tensors.items():
        if SHARED_RULE.search(key):
            shared = getattr(task, "shared", None)
            if shared is None or shared.A.shape != tensor.shape:
                raise ValueError(f"{folder.path}: its shared PHM rule {key!r} does not fit this model's adapter.")
            updates.append((shared.A, tensor.transpose(-1, -2)))
            continue
        match = SITE.search(key)
        if match is None:
            raise ValueError(f"{folder.path}: tensor {key!r} is not a bottleneck adapter's.")
        layer, sublayer, side, part = int(match.group(1)), SUBLAYER[match.group(2)], match.group(3), match.group(4)
        slot = slots.get((layer, sublayer))
        if slot is None:
            raise ValueError(f"{folder.path}: tensor {key!r} is for layer {layer}'s {sublayer}, which this model has "
                             "no adapter site for (a different base model).")
        bank = slot.down if side == "adapter_down.0" else slot.up
        attribute, value = _mapped(bank.kind, part, tensor)
        target = getattr(bank, attribute, None)
        if target is None or target[slot.index].shape != value.shape:
            raise ValueError(f"{folder.path}: tensor {key!r} of shape {tuple(tensor.shape)} does not fit this model's "
                             "adapter (a different base model or hidden size).")
        updates.append((target[slot.index], value))
        seen.add((layer, sublayer, side, attribute))
    expected = {(layer, sublayer, side, attribute) for (layer, sublayer), slot in slots.items()
                for side, bank in (("adapter_down.0", slot.down), ("adapter_up", slot.up))
                for attribute, _ in bank.named_parameters(recurse=False)}
    if expected - seen:
        missing = sorted(expected - seen)[:3]
        raise ValueError(f"{folder.path} lacks adapter tensors this model's sites need, e.g. {missing}: it was "
                         "saved from a different base model.")
    copies = task.base_copies
    for key, value in head.items():
        updates.append((copies[key], value))
    with torch.no_grad():
        for target, value in updates:
            target.copy_(value)


def base_model_for(directory: str | os.PathLike, base_name_or_path: str | os.PathLike | None = None,
                   **from_pretrained_kwargs: Any) -> nn.Module:
    """The transformers model an AdapterHub folder runs on: AutoModel, or a sequence classifier for a head."""
    import transformers

    folder = read(directory)
    base = base_name_or_path or folder.description.get("model_name")
    if not base:
        raise ValueError(f"{folder.path / CONFIG_FILE} does not name its base model; pass it: "
                         "compacter.from_pretrained(base_name_or_path, adapter_dir).")
    if folder.head is None:
        return transformers.AutoModel.from_pretrained(str(base), **from_pretrained_kwargs)
    head = folder.head["config"]
    label2id = head.get("label2id") or None
    if label2id:
        from_pretrained_kwargs.setdefault("id2label", {int(i): label for label, i in label2id.items()})
    from_pretrained_kwargs.setdefault("num_labels", int(head["num_labels"]))
    return transformers.AutoModelForSequenceClassification.from_pretrained(str(base), **from_pretrained_kwargs)
