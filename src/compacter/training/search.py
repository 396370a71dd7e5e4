"""`compacter train --lr auto`: the paper's protocol in one command: a short grid of learning rates, the pick on
validation, the test score of the pick only.

The grid is the method's default for the model's family × {1/3, 1, 3} (methods/learning_rates.py
``lr_grid``), or the rates given. Each grid point is an ordinary run (loop.py ``train``) in its own
sub-folder ``lr<rate>`` of the search's folder, so each resumes like any run and a finished one is
returned, not trained again: running the same command after a kill continues where it stopped.
The pick follows the one selection rule (selection.py). The search's own ``results.json`` keeps
every grid run (learning rate, validation score, folder), the pick and the pick's test score;
``search.log`` says the same in words. (Each grid run's own folder holds its full results, test score
included, as any run's does; only validation scores choose.)
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write
from ..locking import LOCK_FILE, WRITER_FILE, folder_lock
from ..methods.learning_rates import lr_grid
from ..provenance import versions
from .checkpoint import STATE_FILE
from .config import TrainConfig
from .loop import TrainingDiverged, train
from .resume import RESULTS_FILE, SEARCH_LOG
from .selection import SELECTION_RULE, choose_learning_rate

AUTO = "auto"


def grid_folder(output: str | Path, learning_rate: float) -> Path:
    """Where the grid run of ``learning_rate`` lives in a search's folder: ``lr<rate>`` (``lr0.0003``, ``lr3e-05``)."""
    return Path(output) / f"lr{learning_rate:g}"


def search_grid(config: TrainConfig, grid: Sequence[float] | None = None) -> list[float]:
    """The learning rates a search of ``config`` tries (checked), smallest first."""
    if config.learning_rate is not None:
        raise ValueError(f"The learning rate is given ({config.learning_rate:g}) and --lr auto would choose it: give "
                         "one of them (leave learning_rate unset for a search).")
    if grid is None:
        return lr_grid(config.learning_rate_choice().value)
    rates = list(grid)
    bad = [rate for rate in rates if isinstance(rate, bool) or not isinstance(rate, (int, float))
           or not math.isfinite(rate) or rate <= 0]
    if not rates or bad:
        raise ValueError(f"A learning-rate grid must be a non-empty list of finite numbers > 0, got {list(grid)!r}.")
    if len(set(rates)) != len(rates):
        raise ValueError(f"The learning-rate grid lists a rate twice ({rates}); list each once.")
    return sorted(float(rate) for rate in rates)


def train_with_lr_search(config: TrainConfig, grid: Sequence[float] | None = None,
                         on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train one run per learning rate of the grid (each resumable), choose on validation, and return (and write
    as the search folder's results.json) every run's validation score, the pick, and the pick's test score.

    ``config`` leaves ``learning_rate`` unset; ``grid`` defaults to the family default × {1/3, 1, 3};
    ``on_step`` is called after every training step of every grid run (with that run's step).
    """
    rates = search_grid(config, grid)
    center = config.learning_rate_choice() if grid is None else None
    output = Path(config.output_dir or config.default_output_dir(AUTO))
    created = not output.exists()
    with folder_lock(output):  # one writer per search folder (each grid run locks its own as well)
        _check_folder(output)
        where = (f"× {{1/3, 1, 3}} around the default {center.describe()}" if center is not None
                 else "the grid given")
        _log(output, f"--lr auto: {config.method} on {config.task}, learning rates {', '.join(f'{r:g}' for r in rates)} "
                     f"({where})")
        runs, finished = [], {}
        try:
            for rate in rates:
                folder = grid_folder(output, rate)
                run = dataclasses.replace(config, learning_rate=rate, output_dir=str(folder))
                source = {"value": rate, "family": center.family if center else None,
                          "source": f"--lr auto: grid point of {', '.join(f'{r:g}' for r in rates)} ({where})"}
                try:
                    results = finished[rate] = train(run, on_step, learning_rate_source=source)
                except TrainingDiverged as error:  # a result of the search, not a failure of it: this rate is too high
                    runs.append({"learning_rate": rate, "validation": None, "diverged": str(error),
                                 "output_dir": str(folder)})
                    _log(output, f"lr {rate:g}: diverged ({error})")
                    continue
                runs.append({"learning_rate": rate, "validation": results["validation"]["score"],
                             "best_step": results["best_step"], "output_dir": str(folder)})
                _log(output, f"lr {rate:g}: validation score {runs[-1]['validation']:.2f} (step {results['best_step']}), "
                             f"{folder}")
        except BaseException:
            # a search that fails before any run of it wrote anything (a mistyped setting) leaves nothing behind
            # (folder_lock then removes the folders it made)
            if created and {entry.name for entry in output.iterdir()} - {LOCK_FILE, WRITER_FILE} == {SEARCH_LOG}:
                (output / SEARCH_LOG).unlink()
            raise
        if not finished:
            raise ValueError(f"Every learning rate of the grid ({', '.join(f'{r:g}' for r in rates)}) diverged: give a grid "
                             f"of lower rates (see {output / SEARCH_LOG}).")
        chosen = choose_learning_rate((r["learning_rate"], r["validation"]) for r in runs if r["validation"] is not None)
        picked = finished[chosen]
        tied = [r["learning_rate"] for r in runs if r["validation"] == picked["validation"]["score"]]
        if len(tied) > 1:
            examples = picked["identity"]["data"]["validation"]["examples"] if "identity" in picked else "few"
            warning = (f"learning rates {', '.join(f'{r:g}' for r in tied)} tie at validation score "
                       f"{picked['validation']['score']:.2f} ({examples} validation examples): the rule picks "
                       f"{chosen:g}, but the scores do not tell the rates apart. Give a larger validation split.")
            _log(output, f"warning: {warning}")
            warnings.warn(warning, UserWarning, stacklevel=2)
        summary = {
            "learning_rate": AUTO, "task": picked["task"], "model": picked["model"], "method": picked["method"],
            "selection_rule": SELECTION_RULE, "grid": runs, "grid_source": where,
            "learning_rate_source": center.to_dict() if center is not None else None,
            "chosen": {"learning_rate": chosen, "output_dir": str(grid_folder(output, chosen)),
                       "validation": picked["validation"]["score"]},
            "validation": picked["validation"], "best_step": picked["best_step"], "test": picked["test"],
            "config": {**config.to_dict(), "learning_rate": AUTO, "output_dir": str(output)}, "versions": versions(),
        }
        _log(output, f"chosen: lr {chosen:g} ({SELECTION_RULE}); its test score {picked['test']['score']:.2f}")
        text = json.dumps(summary, indent=2)
        atomic_write(output / RESULTS_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return summary


def _check_folder(output: Path) -> None:
    """A search's folder holds searches only: a single run's results or checkpoint there is refused."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output-dir {output} is a file; give a folder (a new one, or this search's own).")
    results = output / RESULTS_FILE
    if results.is_file():
        try:
            finished = json.loads(results.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            finished = None
        if not isinstance(finished, dict) or finished.get("learning_rate") != AUTO:
            raise ValueError(f"{output} holds a finished single run ({RESULTS_FILE}), not a learning-rate search; it "
                             "is left as it is. For --lr auto, give another --output-dir.")
    if (output / STATE_FILE).is_file():
        raise ValueError(f"{output} holds an unfinished single run (its checkpoint), not a learning-rate search; it is "
                         "left as it is. For --lr auto, give another --output-dir (or resume that run with its --lr).")


def _log(output: Path, line: str) -> None:
    output.mkdir(parents=True, exist_ok=True)
    with open(output / SEARCH_LOG, "a", encoding="utf-8") as handle:
        handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
    print(line, file=sys.stderr, flush=True)
