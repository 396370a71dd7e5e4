"""A finished `compacter train` folder as the other commands read it: its results, settings, task and data.

`compacter predict --run`, `evaluate --run`, `score --task RUN_DIR` and `data show --task RUN_DIR`
take a run's base model, best adapter, lengths and task from here, so that they format, encode and
score exactly as the run did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .data import TaskData, load_task
from .data.files import is_data_path, load_files
from .data.loading import parse_json
from .data.splits import low_resource
from .data.tasks import Task, get_task
from .integrity import is_sealed
from .saving import read_description

RESULTS_FILE = "results.json"
ADAPTER_DIR = "adapter"


def finished_run(directory: str | Path) -> dict[str, Any]:
    """The results.json of a finished run; a folder without one (or with a damaged one) is refused."""
    path = Path(directory) / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a finished run: it has no {RESULTS_FILE} (and so no best adapter "
                                "yet).")
    try:
        results = parse_json(path.read_bytes().decode("utf-8"), str(path))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error.reason}).") from None
    is_sealed(results if isinstance(results, dict) else {}, path, "Train the run again into another --output-dir.")
    if not (isinstance(results, dict) and isinstance(results.get("config"), dict) and isinstance(results.get("task"), str)
            and isinstance(results["config"].get("model"), str)):
        raise ValueError(f"{path} is not the results of a `compacter train` run (it lacks its \"task\" name or its "
                         "\"config\" with the base model). Give --run a folder that `compacter train` finished, or "
                         "give --model and --adapter NAME=DIR.")
    if results.get("learning_rate") == "auto":
        chosen = (results.get("chosen") or {}).get("output_dir")
        raise ValueError(f"{directory} is a learning-rate search (--lr auto); give the run it chose: {chosen}.")
    return results


def is_run(directory: str | Path) -> bool:
    return Path(directory).is_dir() and (Path(directory) / RESULTS_FILE).is_file()


def run_task(directory: str | Path) -> Task:
    """The task a run trained, as its best adapter recorded it (labels, fields, metrics)."""
    from .predict import task_of

    finished_run(directory)
    adapter = Path(directory) / ADAPTER_DIR
    task = task_of(read_description(adapter), "")
    if task is None:
        raise ValueError(f"{adapter} does not record its task; it was not written by `compacter train`.")
    return task


def run_examples(directory: str | Path, split: str) -> list[dict]:
    """A split of the run's own data, made exactly as the run made it (its files, columns, seed, training size)."""
    splits = task_data(str(directory)).splits
    if split not in splits:
        raise ValueError(f"The run's data has no {split!r} split; its splits are {', '.join(splits)}.")
    return splits[split]


def task_data(name: str, *, data_dir: str | None = None, seed: int = 42, train_size: int | None = None,
              columns: dict[str, str | None] | None = None) -> TaskData:
    """A task's splits: a GLUE/SuperGLUE name, a finished run's folder (its own data, as it made it), or your own
    file or folder with its columns (--text-column, --label-column, ...)."""
    if is_run(name):
        from .training import TrainConfig
        from .training.inputs import load_splits

        config = finished_run(name)["config"]
        return load_splits(TrainConfig(**{k: v for k, v in config.items() if k in TrainConfig.__dataclass_fields__}))
    if is_data_path(name):
        task, splits = load_files(name, seed=seed, **(columns or {}))
        return TaskData(task, {**splits, "train": low_resource(splits["train"], train_size, seed)})
    if columns and any(columns.values()):
        raise ValueError(f"--text-column, --label-column, ... name the columns of your own data file; {name!r} is "
                         "not a file or folder (nor a finished run).")
    return load_task(name, data_dir, seed=seed, train_size=train_size)


def named_task(name: str, columns: dict[str, str | None] | None = None) -> Task:
    """The task of a GLUE/SuperGLUE name, a finished run's folder or your own file (with its columns)."""
    if is_run(name):
        return run_task(name)
    if is_data_path(name):
        return load_files(name, **(columns or {}))[0]
    if Path(name).exists() or "/" in name:
        raise ValueError(f"{name} is neither a finished run's folder (with results.json) nor a CSV / JSON-lines / "
                         "parquet file or folder, nor a GLUE/SuperGLUE task name.")
    return get_task(name)
