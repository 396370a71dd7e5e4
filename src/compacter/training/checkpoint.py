"""The training state, saved atomically and restored exactly: a killed run resumes where it stood.

One file, ``training_state.safetensors``: its tensors are the trained parameters, the optimiser's
moments and torch's (and CUDA's) RNG states; everything else is plain JSON in the file's metadata:
the step, the best validation score, the evaluation history, the scheduler's and grad scaler's
state, numpy's and Python's RNG states and the run's identity (identity.py). Nothing is pickled, so
a planted or damaged file can only be refused, never run. The data order needs nothing: it is a
function of (seed, epoch).

Earlier versions wrote ``training_state.pt``, a pickle: it is never opened, only reported.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..io import atomic_write
from . import distributed

STATE_FILE = "training_state.safetensors"
LEGACY_STATE_FILE = "training_state.pt"
FORMAT = "compacter-training-state/1"


@dataclass
class TrainingState:
    identity: dict[str, Any]  # what run this is (identity.py); a resume must match it
    step: int
    best: dict[str, Any] | None  # {"score", "step", "metrics"} of the best validation so far
    history: list[dict[str, Any]]
    elapsed: float  # training seconds so far
    trained: dict[str, torch.Tensor]  # the trained parameters, whole (gathered from shards)
    optimizer: dict[str, Any]  # Optimizer.state_dict() with whole tensors
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    rng: dict[str, Any]  # rng_state()


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(directory: Path, state: TrainingState) -> None:
    tensors = {f"trained/{name}": tensor.contiguous() for name, tensor in state.trained.items()}
    moments: dict[str, dict[str, Any]] = {}
    for index, values in state.optimizer["state"].items():
        moments[str(index)] = {}
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer/{index}/{key}"] = value.contiguous()
            else:
                moments[str(index)][key] = value
    tensors["rng/torch"] = state.rng["torch"]
    for device, generator in enumerate(state.rng["cuda"] or []):
        tensors[f"rng/cuda/{device}"] = generator
    kind, keys, position, has_gauss, cached = state.rng["numpy"]
    document = {
        "identity": state.identity, "step": state.step, "best": state.best, "history": state.history,
        "elapsed": state.elapsed, "scheduler": state.scheduler, "scaler": state.scaler,
        "optimizer": {"param_groups": state.optimizer["param_groups"], "state": moments},
        "rng": {"numpy": [kind, np.asarray(keys).tolist(), int(position), int(has_gauss), float(cached)],
                "python": _json_ready(state.rng["python"]), "cuda_devices": len(state.rng["cuda"] or [])},
    }
    metadata = {"format": FORMAT, "state": json.dumps(document)}
    atomic_write(directory / STATE_FILE, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_state(directory: Path) -> TrainingState | None:
    """The run's saved state, or None when it has none; a file that is not one (or an old pickle) is refused."""
    path = directory / STATE_FILE
    if path.is_symlink() or (path.exists() and not path.is_file()):  # /dev/zero, a folder, a link to elsewhere
        raise ValueError(_refusal(path, "it is not a regular file of the run's own"))
    if not path.is_file():
        legacy = directory / LEGACY_STATE_FILE
        if legacy.is_file():
            raise ValueError(f"{legacy} is a checkpoint of an earlier compacter, a pickle, which this version never "
                             "opens (loading one can run code). To start this run over, give another --output-dir; "
                             f"{directory}'s files are left as they are.")
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        document = json.loads(metadata["state"]) if metadata.get("format") == FORMAT else None
        state = _state(document, tensors) if isinstance(document, dict) else None
    except Exception as error:  # anything a foreign or truncated file makes the reader raise
        raise ValueError(_refusal(path, f"{type(error).__name__}: {error}")) from None
    if state is None:
        raise ValueError(_refusal(path, f"not a {FORMAT} file"))
    return state


def _state(document: dict[str, Any], tensors: dict[str, torch.Tensor]) -> TrainingState:
    if not (isinstance(document["identity"], dict) and isinstance(document["history"], list)
            and isinstance(document["best"], (dict, type(None)))):
        raise TypeError("its identity, history or best score is not what a training state holds")
    step = document["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"its step is {step!r}; a checkpoint is saved after step 1 or later")
    best = document["best"]
    if best is not None and not (isinstance(best.get("step"), int) and 1 <= best["step"] <= step):
        raise ValueError(f"its best step {best.get('step')!r} is not one of the steps 1 to {step} it trained")
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{key} holds NaN or infinite values")
    optimizer_state: dict[int, dict[str, Any]] = {int(index): dict(values)
                                                  for index, values in document["optimizer"]["state"].items()}
    for key, tensor in tensors.items():
        if key.startswith("optimizer/"):
            _, index, name = key.split("/", 2)
            optimizer_state.setdefault(int(index), {})[name] = tensor
    kind, keys, position, has_gauss, cached = document["rng"]["numpy"]
    version, internal, gauss = document["rng"]["python"]
    cuda = [tensors[f"rng/cuda/{device}"] for device in range(document["rng"]["cuda_devices"])]
    return TrainingState(
        identity=document["identity"], step=int(document["step"]), best=document["best"],
        history=list(document["history"]), elapsed=float(document["elapsed"]),
        trained={key.removeprefix("trained/"): t for key, t in tensors.items() if key.startswith("trained/")},
        optimizer={"state": optimizer_state, "param_groups": document["optimizer"]["param_groups"]},
        scheduler=dict(document["scheduler"]), scaler=dict(document["scaler"]),
        rng={"torch": tensors["rng/torch"], "cuda": cuda or None, "python": (version, tuple(internal), gauss),
             "numpy": (kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached)})


def _refusal(path: Path, reason: str) -> str:
    return (f"{path} is not a training state this compacter can read ({reason}). It may be damaged or written by "
            "something else; to start this run over, give another --output-dir.")


def _json_ready(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_json_ready(v) for v in value]
    return value


def load_trained(model, trained: dict[str, torch.nn.Parameter], tensors: dict[str, torch.Tensor], source: str) -> None:
    missing = sorted(set(trained) - set(tensors))
    mismatched = sorted(name for name in set(trained) & set(tensors) if tensors[name].shape != trained[name].shape)
    if missing or mismatched:
        raise ValueError(f"{source} does not hold this run's trained parameters (missing {missing[:3]}, other shapes "
                         f"{mismatched[:3]}); it was changed after it was written. To train again, give another "
                         "--output-dir.")
    with torch.no_grad():
        for name, param in trained.items():
            distributed.copy_into(param, tensors[name])
