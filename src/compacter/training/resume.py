"""What a run folder already holds, and whether this run may use it: finished results, a checkpoint, or nothing.

The same run started again finds its folder in one of three states:

* finished (``results.json``): its results are returned if the run's identity (identity.py) is
  this one's, else refused, saying what differs; they are never run again or overwritten;
* interrupted (``training_state.safetensors``): it resumes from the checkpoint if the identity
  matches (and the best adapter it saved in ``adapter/`` can be read), else it is refused the same way;
  ``adapter/`` must be the run's own: a real folder, saved by this run (its identity's digest) at the
  best step the checkpoint records (the adapter's seal), and results.json (sealed) names it too;
* new: the folder (and ``train.log``) is made. If the run then fails before its first
  checkpoint, what it made is removed again, so that a mistyped setting leaves nothing behind.

A refusal never advises deleting anything: another ``--output-dir`` always starts a new run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..integrity import SEAL, digest, is_sealed
from ..saving import read_adapter, read_description
from . import distributed
from .checkpoint import STATE_FILE, TrainingState, read_state
from .config import TrainConfig
from .identity import differences, legacy_differences

RESULTS_FILE = "results.json"
LOG_FILE = "train.log"
SEARCH_LOG = "search.log"  # a learning-rate search's folder (search.py): its runs are in sub-folders
BEST_DIR = "adapter"  # the best validation checkpoint's trained parameters, as compacter.save writes them
RUN_KEY = "run_identity_sha256"  # in the adapter's metadata: the run that saved it
ADAPTER_SEAL_KEY = "adapter_sha256"  # in the best checkpoint's record and in results.json: the adapter's seal


def finished_results(output: Path, identity: dict[str, Any], config: TrainConfig) -> dict[str, Any] | None:
    """The results of this run when ``output`` holds it finished; None when it holds no finished run."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output-dir {output} is a file; give a folder (a new one, or a run's own).")
    path = output / RESULTS_FILE
    if (output / SEARCH_LOG).is_file():
        raise ValueError(f"{output} holds a learning-rate search (--lr auto), whose runs are in its lr* sub-folders; it "
                         "is left as it is. To train a single run, give another --output-dir (or that search's "
                         "sub-folder of your learning rate).")
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}): the finished run there cannot be read. Its folder is "
                         "left as it is; to train again, give another --output-dir.") from None
    if not isinstance(results, dict) or not isinstance(results.get("config"), dict):
        raise ValueError(f"{path} is not a compacter results file (it has no run config). Its folder is left as it "
                         "is; to train, give another --output-dir.")
    if is_sealed(results, path, "Its folder is left as it is; to train again, give another --output-dir."):
        _check_adapter_seal(output, results)
    if "identity" not in results:  # written before runs recorded their identity: compare what was recorded
        changed = legacy_differences(results["config"], config)
        if changed:
            raise ValueError(_other_run(output, "a finished run", changed, finished=True))
        print(f"{path} was written by an earlier compacter, which did not record the run's data and base model; "
              "it is returned as it is, with only its settings checked.", file=sys.stderr)
        return results
    changed = differences(results["identity"], identity)
    if changed:
        raise ValueError(_other_run(output, "a finished run", changed, finished=True))
    return results


def resumable_state(output: Path, identity: dict[str, Any]) -> TrainingState | None:
    """The checkpoint of this run in ``output``, or None; another run's (or a damaged) checkpoint is refused."""
    state = read_state(output)
    if state is not None:
        changed = differences(state.identity, identity)
        if changed:
            raise ValueError(_other_run(output, f"an unfinished run (checkpoint at step {state.step})", changed,
                                        finished=False))
        if state.best is not None:
            best_adapter(output, state.best, identity)  # refused now, not at the end of the run
    return state


def best_adapter(output: Path, best: dict[str, Any], identity: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The trained parameters of the best validation checkpoint (``best``: its step and the seal of the adapter
    saved then) that this run (``identity``) saved in its own ``adapter/`` folder, named as in its file (checked as
    `compacter.load` checks them, and tied to the run: a real folder of the run, saved by it at that step)."""
    step = best["step"]
    try:
        description, tensors = read_adapter(output / BEST_DIR, own=True)
    except (ValueError, OSError) as error:  # missing, truncated, edited or foreign: refused by its checks
        raise ValueError(f"The best adapter so far (step {step}) cannot be read: {error} It changed after the run "
                         "wrote it; to train again, give another --output-dir.") from None
    metadata = description.get("metadata") or {}
    recorded_run, recorded_seal = metadata.get(RUN_KEY), best.get(ADAPTER_SEAL_KEY)
    if (recorded_run is not None and recorded_run != digest(identity)) or metadata.get("step", step) != step or (
            recorded_seal is not None and description.get(SEAL) != recorded_seal):
        raise ValueError(f"{output / BEST_DIR} is not the adapter this run saved at its best step ({step}): it was "
                         "saved by another run, or at another step. To train again, give another --output-dir.")
    return tensors


def _check_adapter_seal(output: Path, results: dict[str, Any]) -> None:
    """A finished run's adapter/ is the one its results were scored with."""
    try:
        description = read_description(output / BEST_DIR, own=True)
    except (ValueError, OSError) as error:
        raise ValueError(f"The adapter of the finished run in {output} cannot be read: {error}") from None
    if description.get(SEAL) != results.get(ADAPTER_SEAL_KEY):
        raise ValueError(f"{output / BEST_DIR} is not the adapter {output / RESULTS_FILE} was scored with (it was "
                         "replaced after the run finished). Its folder is left as it is; to train again, give another "
                         "--output-dir.")


@contextlib.contextmanager
def run_folder(output: Path, processes: distributed.Processes) -> Iterator[logging.Logger]:
    """The run's folder and its log (train.log and stderr, on the main process); on a failure before the
    first checkpoint, whatever this call made in the folder is removed again."""
    made = [folder for folder in (output, *output.parents) if not folder.exists()]
    before = {entry.name for entry in output.iterdir()} if output.is_dir() else set()
    log = logging.getLogger(f"compacter.train.{output.resolve()}")
    log.setLevel(logging.INFO)
    log.propagate = False
    if processes.main:
        output.mkdir(parents=True, exist_ok=True)
        for handler, style in ((logging.FileHandler(output / LOG_FILE, encoding="utf-8"), "%(asctime)s %(message)s"),
                               (logging.StreamHandler(sys.stderr), "%(message)s")):
            handler.setFormatter(logging.Formatter(style))
            log.addHandler(handler)
    try:
        yield log
    except BaseException:
        if processes.main and not (output / STATE_FILE).exists() and not (output / RESULTS_FILE).exists():
            _close(log)
            for entry in output.iterdir():
                if entry.name in before:
                    continue
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            for folder in made:  # innermost first
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise
    finally:
        _close(log)


def _close(log: logging.Logger) -> None:
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def _other_run(output: Path, what: str, changed: list[str], finished: bool) -> str:
    advice = ("Its results are kept as they are. To train with these settings and this data, give another "
              "--output-dir." if finished else
              "To resume it, run it again with its own settings and data; to train with these instead, give "
              "another --output-dir (this folder is left as it is).")
    return f"{output} holds {what} that differs from this one:\n  " + "\n  ".join(changed) + "\n" + advice
