"""A compacter task written as an AdapterHub folder that ``adapters``' ``load_adapter`` reads (the mapping of
adapterhub.py, inverted): ``adapter_config.json``, the weights as ``adapter.safetensors`` and as
``pytorch_adapter.bin`` (a plain name → tensor mapping, readable with torch's weights-only loader).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from .. import __version__
from ..card import hub_id
from ..container import container_of
from ..io import atomic_write
from ..methods import AdapterConfig
from ..methods.adapters import bottleneck_slots
from ..pooling import refuse_mean_pooling
from .adapterhub import ACTIVATIONS, BERT_FAMILY, CONFIG_FILE, REQUIRED, _ours


def export(model: nn.Module, directory: str | os.PathLike, *, name: str | None = None) -> Path:
    """Write task ``name`` as an AdapterHub folder that ``adapters``' ``load_adapter`` reads."""
    task = container_of(model).task(name)
    config = task.config
    refuse_mean_pooling(model, "AdapterHub")
    if not isinstance(config, AdapterConfig):
        raise ValueError(f"Task {task.name!r} is a {config.name!r} task; AdapterHub export covers bottleneck adapters "
                         "(adapter, pfeiffer, phm-adapter, compacter, compacter++).")
    if config.projection == "low_rank":
        raise ValueError(f"Task {task.name!r} uses projection={config.projection!r}, which AdapterHub has no layer for.")
    model_type = getattr(model.config, "model_type", None)
    if model_type not in BERT_FAMILY:
        raise ValueError(f"AdapterHub export covers BERT-family encoders ({', '.join(BERT_FAMILY)}), not {model_type!r}.")
    _refuse_trained_base_copies(model, task)
    hidden = model.config.hidden_size
    tensors: dict[str, torch.Tensor] = {}
    prefix = "bert" if model_type == "bert" else model_type.replace("-", "_")
    slots = bottleneck_slots(task)
    for key, slot in slots.items():
        layer, sublayer = _ours(key)
        location = f"{prefix}.encoder.layer.{layer}.{'attention.output' if sublayer == 'attention' else 'output'}"
        for side, bank in (("adapter_down.0", slot.down), ("adapter_up", slot.up)):
            stem = f"{location}.adapters.{task.name}.{side}"
            values = {attribute: p[slot.index].detach().cpu() for attribute, p in bank.named_parameters(recurse=False)}
            if bank.kind == "dense":
                tensors.update({f"{stem}.weight": values["weight"], f"{stem}.bias": values["bias"]})
            else:
                if "A" in values:
                    tensors[f"{stem}.phm_rule"] = values["A"].transpose(-1, -2)
                if bank.rank is None:
                    tensors[f"{stem}.W"] = values["B"].transpose(-1, -2)
                else:
                    tensors.update({f"{stem}.W_left": values["t"], f"{stem}.W_right": values["s"].transpose(-1, -2)})
                tensors[f"{stem}.b"] = values["bias"]
    shared = getattr(task, "shared", None)
    if shared is not None:
        tensors[f"{prefix}.shared_parameters.{task.name}.phm_rule"] = shared.A.detach().cpu().transpose(-1, -2)
    tensors = {key: value.contiguous().float() for key, value in tensors.items()}
    first = next(iter(slots.values()))
    options = {**REQUIRED, "original_ln_before": config.adapter_input == "layer_normed_sum",
               "mh_adapter": "attention" in config.sublayers, "output_adapter": "feed_forward" in config.sublayers,
               "reduction_factor": hidden / first.down.out_features, "non_linearity": _their_activation(config.activation),
               "init_weights": "bert", "init_weights_seed": None, "inv_adapter_reduction_factor": None,
               "leave_out": [i for i in range(model.config.num_hidden_layers) if not config.selects(i)],
               "dropout": 0.0, "phm_layer": config.projection == "phm", "phm_dim": config.n, "factorized_phm_W":
               config.rank is not None, "shared_phm_rule": shared is not None, "phm_c_init": "normal",
               "phm_init_range": 0.0001, "learn_phm": True, "hypercomplex_nonlinearity": "glorot-uniform",
               "phm_rank": config.rank or 1}
    description = {"config": options, "hidden_size": hidden, "model_class": type(model).__name__,
                   "model_name": hub_id(getattr(model, "name_or_path", None)), "model_type": model_type,
                   "name": task.name, "version": f"adapters.{__version__}+compacter"}
    directory = Path(directory)
    atomic_write(directory / "adapter.safetensors", lambda tmp: save_file(tensors, tmp))
    atomic_write(directory / "pytorch_adapter.bin", lambda tmp: torch.save(tensors, tmp))
    atomic_write(directory / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(description, indent=2)))
    return directory


def _their_activation(ours: str) -> str:
    for theirs, mapped in ACTIVATIONS.items():
        if mapped == ours:
            return theirs
    raise ValueError(f"AdapterHub has no activation {ours!r}.")


def _refuse_trained_base_copies(model: nn.Module, task) -> None:
    """An AdapterHub folder holds adapters only: a task whose layer norms or head moved from the base's is refused."""
    named = dict(model.named_parameters())
    for key, copy in task.base_copies.items():
        base = named.get(key)
        if base is None or not torch.equal(copy.detach().cpu(), base.detach().cpu().to(copy.dtype)):
            raise ValueError(f"Task {task.name!r} trained its own {key}, which an AdapterHub adapter folder cannot "
                             "hold; export tasks trained with train_layer_norms=False and train_head=False.")
