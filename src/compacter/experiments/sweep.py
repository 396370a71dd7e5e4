"""`compacter sweep CONFIG.yaml`: a grid of runs, one after another, resumable.

    output_dir: runs/glue            # every run gets a folder below it
    models: [t5-base]
    tasks: [rte, mrpc, cola]         # task names or your own data files
    methods: [compacter, compacter++, adapter]
    learning_rates: [3e-3, 3e-4]     # optional; default: each method's paper learning rate
    seeds: [42, 43, 44]              # optional; default [42]
    train_sizes: [100, 1000, null]   # optional low-resource sizes; null = the whole training set
    settings: {data_dir: glue_data}  # any other `compacter train` setting (TrainConfig field), for all runs

A run whose folder already holds results.json is skipped, and an interrupted one resumes, so the
same command picks up a killed sweep. The learning rate is then chosen per model, task, method
and training size on the validation score (mean over seeds), as the paper does; `compacter
report` makes the tables from the same folder.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from ..training import RESULTS_FILE, TrainConfig, train

GRID_KEYS = {"models", "tasks", "methods", "learning_rates", "seeds", "train_sizes"}
KNOWN_KEYS = GRID_KEYS | {"output_dir", "settings"}
DEFAULT_OUTPUT = "runs/sweep"


def read_sweep(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; write a sweep file (see `compacter sweep --help`).")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from None
    unknown = set(spec) - KNOWN_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}; a sweep has {sorted(KNOWN_KEYS)}.")
    for key in ("models", "tasks", "methods"):
        if not spec.get(key):
            raise ValueError(f"{path}: '{key}' must list at least one entry.")
    return spec


def sweep_root(spec: dict[str, Any]) -> Path:
    return Path(spec.get("output_dir") or DEFAULT_OUTPUT)


def expand(spec: dict[str, Any]) -> Iterator[TrainConfig]:
    """Every run of the grid, each with its own output folder."""
    root = sweep_root(spec)
    settings = dict(spec.get("settings") or {})
    grid = itertools.product(spec["models"], spec["tasks"], spec["methods"], spec.get("train_sizes") or [None],
                             spec.get("learning_rates") or [None], spec.get("seeds") or [42])
    for model, task, method, size, lr, seed in grid:
        config = TrainConfig(model=model, task=str(task), method=method, learning_rate=lr, seed=seed, train_size=size,
                             **settings)
        lr = config.resolved().learning_rate
        name = "/".join([Path(str(model)).name, Path(str(task)).stem, method, f"n{size or 'all'}", f"lr{lr:g}",
                         f"seed{seed}"])
        yield TrainConfig(**{**config.to_dict(), "output_dir": str(root / name)})


def run_sweep(spec: dict[str, Any], progress=print) -> list[dict]:
    """Train every run of ``spec`` (from :func:`read_sweep`) that has not finished; returns their results."""
    configs = list(expand(spec))
    results = []
    for index, config in enumerate(configs, 1):
        done = (Path(config.output_dir) / RESULTS_FILE).is_file()
        progress(f"[{index}/{len(configs)}] {config.output_dir}" + ("  (finished: skipped)" if done else ""))
        results.append(train(config))
    return results
