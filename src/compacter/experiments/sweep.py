"""`compacter sweep CONFIG.yaml`: a grid of runs, one after another, resumable.

    output_dir: runs/glue            # every run gets a folder below it (default runs/sweep)
    models: [t5-base]
    tasks: [rte, mrpc, cola]         # task names or your own data files
    methods: [compacter, compacter++, adapter]
    learning_rates: [3e-3, 3e-4]     # optional; default: each method's default for the model's family
    seeds: [42, 43, 44]              # optional; default [42]
    train_sizes: [100, 1000, null]   # optional low-resource sizes; null = the whole training set
    settings: {data_dir: glue_data}  # any other `compacter train` setting (TrainConfig field), for all runs

Every key but ``output_dir`` and ``settings`` is a list, even of one entry (``methods: [compacter]``).
The file is checked whole before any run starts: an unknown key, a key given twice, an entry of
the wrong type (``seeds: 42``, ``learning_rates: [fast]``), a repeated entry, a setting that is
not a TrainConfig field, or two runs that would share a folder is refused, naming the key.
Numbers read the YAML 1.2 way (``3e-3`` is a number, as in JSON).

A run whose folder already holds its results is skipped, and an interrupted one resumes, so the
same command picks up a killed sweep. The learning rate is then chosen per model, task, method
and training size on the validation score (mean over seeds), as the paper does, by the one rule
that `--lr auto` follows too (training/selection.py: the best score, on a tie the smaller rate);
`compacter report` makes the tables from the same folder. Without ``learning_rates`` each run
gets its method's default for the model's family (methods/learning_rates.py).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..locking import folder_lock
from ..methods.settings import check_fields, setting
from ..training import RESULTS_FILE, TrainConfig, train
from ..training.config import MAX_SEED

# Each run's own settings come from the grid; the sweep's settings may not set them.
GRID_FIELDS = {"model": "models", "task": "tasks", "method": "methods", "learning_rate": "learning_rates",
               "seed": "seeds", "train_size": "train_sizes", "output_dir": "output_dir"}


@dataclass
class Sweep:
    models: list[str] = setting(non_empty=True)
    tasks: list[str] = setting(non_empty=True)
    methods: list[str] = setting(non_empty=True)
    output_dir: str = setting("runs/sweep", non_empty=True)
    learning_rates: list[float] | None = setting(None, above=0, non_empty=True)  # None: each method's default
    seeds: list[int] = setting(factory=lambda: [42], at_least=0, at_most=MAX_SEED, non_empty=True)
    train_sizes: list[int | None] = setting(factory=lambda: [None], at_least=1, non_empty=True)  # None: all
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_fields(self)
        for key in ("models", "tasks", "methods", "learning_rates", "seeds", "train_sizes"):
            entries = getattr(self, key) or []
            repeated = [entry for index, entry in enumerate(entries) if entry in entries[:index]]
            if repeated:
                raise ValueError(f"{key} lists {repeated[0]!r} twice; list each entry once.")
        trainable = {f.name for f in dataclasses.fields(TrainConfig)}
        for key in self.settings:
            if key in GRID_FIELDS:
                raise ValueError(f"settings: {key!r} is set by the grid; list it under {GRID_FIELDS[key]}.")
            if key not in trainable:
                raise ValueError(f"settings: {key!r} is not a setting of `compacter train`; the settings are "
                                 f"{', '.join(sorted(trainable - set(GRID_FIELDS)))}.")


def read_yaml_mapping(path: Path, name: str, example: str) -> dict[str, Any]:
    """A YAML file that holds a mapping of names to values (JSON's numbers, no key twice), or a clear error;
    ``name`` is how messages call the file, ``example`` shows what it should hold."""
    try:
        spec = yaml.load(path.read_text(encoding="utf-8-sig"), Loader=_SweepLoader)
    except yaml.YAMLError as error:
        raise ValueError(f"{name} is not valid YAML: {error}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{name} is not UTF-8 text ({error.reason} at byte {error.start}).") from None
    if spec is None:
        spec = {}
    if not isinstance(spec, dict) or not all(isinstance(key, str) for key in spec):
        raise ValueError(f"{name} must be a mapping of {example}.")
    return spec


def read_sweep(path: str | Path) -> Sweep:
    """The sweep a YAML file describes, with every one of its runs checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; write a sweep file (see `compacter sweep --help`).")
    spec = read_yaml_mapping(path, str(path), "keys to values (models: [...], tasks: [...], ...)")
    known = [f.name for f in dataclasses.fields(Sweep)]
    unknown = sorted(set(spec) - set(known))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; a sweep has {sorted(known)}.")
    missing = [key for key in ("models", "tasks", "methods") if key not in spec]
    if missing:
        raise ValueError(f"{path}: '{missing[0]}' must list at least one entry, e.g. {missing[0]}: [...].")
    try:
        sweep = Sweep(**spec)
        folders: dict[str, TrainConfig] = {}
        for config in expand(sweep):
            if config.output_dir in folders:
                raise ValueError(f"two runs would share the folder {config.output_dir} ({_run(folders[config.output_dir])} "
                                 f"and {_run(config)}); give the models or tasks distinct folder names.")
            folders[config.output_dir] = config
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return sweep


def expand(sweep: Sweep) -> Iterator[TrainConfig]:
    """Every run of the grid, each with its own output folder."""
    root = Path(sweep.output_dir)
    grid = itertools.product(sweep.models, sweep.tasks, sweep.methods, sweep.train_sizes,
                             sweep.learning_rates or [None], sweep.seeds)
    for model, task, method, size, lr, seed in grid:
        config = TrainConfig(model=model, task=task, method=method, learning_rate=lr, seed=seed, train_size=size,
                             **sweep.settings)
        lr = config.resolved().learning_rate
        name = "/".join([Path(model).name, Path(task).stem, method, f"n{size or 'all'}", f"lr{lr:g}", f"seed{seed}"])
        yield dataclasses.replace(config, output_dir=str(root / name))


def run_sweep(sweep: Sweep, progress=print) -> list[dict]:
    """Train every run of ``sweep`` (from :func:`read_sweep`) that has not finished; returns their results."""
    configs = list(expand(sweep))
    results = []
    with folder_lock(sweep.output_dir):  # one sweep at a time in a folder (each run locks its own as well)
        for index, config in enumerate(configs, 1):
            done = (Path(config.output_dir) / RESULTS_FILE).is_file()
            progress(f"[{index}/{len(configs)}] {config.output_dir}" + ("  (finished: skipped)" if done else ""))
            results.append(train(config))
    return results


def _run(config: TrainConfig) -> str:
    return f"{config.model} on {config.task}"


class _SweepLoader(yaml.SafeLoader):
    """YAML with JSON's numbers (PyYAML's YAML 1.1 reads 3e-3 as text) and no key twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        keys = [self.construct_object(key_node, deep=True) for key_node, _ in node.value]
        for index, key in enumerate(keys):
            if isinstance(key, str) and key in keys[:index]:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                        node.value[index][0].start_mark)
        return super().construct_mapping(node, deep=deep)


_SweepLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                   list("-+0123456789"))
