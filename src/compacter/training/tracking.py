"""`--report-to tensorboard wandb mlflow`: a run's loss, learning rate, validation metrics and throughput, logged
through each tracker's own API (optional extras: ``pip install 'compacter-adapters[track]'``).

* tensorboard: event files in ``<output_dir>/tensorboard`` (``torch.utils.tensorboard.SummaryWriter``);
* wandb: ``wandb.init(dir=<output_dir>, name=<run folder>, config=<the run's settings>)``; ``WANDB_MODE=offline``
  (or ``wandb offline``) keeps it on this machine;
* mlflow: a run named after the run folder, in the tracking store ``MLFLOW_TRACKING_URI`` names (else
  mlflow's default), with the settings as parameters.

Each step logs ``train/loss`` and ``train/learning_rate``; each evaluation ``validation/<metric>`` and
``train/examples_per_second``; the end ``test/<metric>``. Only the main process logs. A tracker that is
not installed is refused when the run's settings are checked, before anything is written.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # name → the package it needs
NONE = "none"
TRACKING_DIR = "tensorboard"


def check_trackers(names: list[str]) -> None:
    """``--report-to``: known trackers, ``none`` alone, each one installed; else a ValueError that says the fix."""
    if NONE in names and len(names) > 1:
        raise ValueError(f"--report-to none means no tracker; it cannot be given with {[n for n in names if n != NONE]}.")
    for name in names:
        if name == NONE:
            continue
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise ValueError(f"--report-to {name}: the {TRACKERS[name]} package is not installed. Install it (pip "
                             f"install {TRACKERS[name]}, or pip install 'compacter-adapters[track]' for all trackers), "
                             f"or leave {name} out of --report-to.")


class Trackers:
    """The trackers of one run; a context manager that closes them."""

    def __init__(self, names: list[str], output: Path, settings: dict[str, Any], main: bool = True):
        self.loggers = [] if not main else [_OPEN[name](output, settings) for name in names if name != NONE]

    def log(self, values: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log(values, step)

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc_info) -> None:
        for logger in self.loggers:
            logger.close()
        self.loggers = []


def metrics(prefix: str, scores: dict[str, Any]) -> dict[str, float]:
    """A split's metrics as tracker values (``validation/accuracy``, ...): the numbers only, not the counts."""
    return {f"{prefix}/{name}": float(value) for name, value in scores.items()
            if isinstance(value, float) and name not in ("n", "invalid")}


class _TensorBoard:
    def __init__(self, output: Path, settings: dict[str, Any]):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(output / TRACKING_DIR))
        self.writer.add_text("settings", "\n".join(f"    {key}: {value}" for key, value in settings.items()), 0)

    def log(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, output: Path, settings: dict[str, Any]):
        import wandb

        self.run = wandb.init(project="compacter", name=output.name, dir=str(output), config=settings, reinit=True)

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    def __init__(self, output: Path, settings: dict[str, Any]):
        import mlflow

        self.mlflow = mlflow
        self.run = mlflow.start_run(run_name=output.name)
        mlflow.log_params({key: str(value)[:500] for key, value in settings.items()})  # mlflow's limit per value

    def log(self, values: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(values, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


_OPEN = {"tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow}
