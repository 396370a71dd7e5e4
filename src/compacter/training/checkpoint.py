"""The training state, saved atomically and restored exactly: a killed run resumes where it stood.

What is saved: the trained parameters (only those), the optimiser, scheduler and grad-scaler
state, every RNG (torch, CUDA, numpy, python), the step, the best validation score and the
evaluation history. The data order needs nothing: it is a function of (seed, epoch).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_write

STATE_FILE = "training_state.pt"


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(directory: Path, state: dict[str, Any]) -> None:
    atomic_write(directory / STATE_FILE, lambda tmp: torch.save(state, tmp))


def load_state(directory: Path) -> dict[str, Any] | None:
    path = directory / STATE_FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=False, map_location="cpu")
    except Exception as error:  # a damaged file must not be silently trained over
        raise ValueError(f"{path} could not be read ({error}). Delete it to start the run from scratch.") from None
