"""`compacter train --config run.yaml` and `--print-config`: a run's flags as a YAML file.

Every flag of `compacter train` is a key, named as the flag without its dashes (``lr``,
``batch_size``, ``warmup_steps``, ``max_steps``, ``text_column``, ...; ``batch-size`` is read
too); ``set`` is a mapping of method settings (``set: {share_A: false}``); a boolean flag
(``fsdp``, ``short_warmup``, ...) is ``true`` or ``false``; ``null`` is the flag's default. Flags
given on the command line win over the file (``--set`` per setting). An unknown key is refused
naming the nearest one, and a value of the wrong type naming what the key takes, before anything
is written. Numbers are read as JSON reads them (``3e-4`` is a number, not text).

``--print-config`` writes the YAML of every key (the file's, the command line's, ``null`` for the
rest) and trains nothing: ``compacter train --config`` of that file is the same run, with the same
identity.
"""

from __future__ import annotations

import argparse
import difflib
import math
from pathlib import Path
from typing import Any

import yaml

from .experiments.sweep import read_yaml_mapping
from .methods import CONFIG_KINDS
from .methods.settings import format_text, parse_assignments

METHOD_FLAGS = ("n", "rank", "reduction_factor", "bottleneck_size", "num_tokens")  # shortcuts of set: {KEY: VALUE}
NOT_KEYS = ("help", "config", "print_config")  # flags that are not settings of the run
# settings named differently in Python (TrainConfig) than on the command line
PYTHON_NAMES = {"learning_rate": "lr", "head_learning_rate": "head_lr", "pretrained": "random_init",
                "method_overrides": "set"}


def settings_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The file's keys (flags without dashes, with underscores) and the parser's action for each."""
    return {action.option_strings[-1].lstrip("-").replace("-", "_"): action
            for action in parser._actions if action.option_strings and action.dest not in NOT_KEYS}


def read_config_file(path: str | Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The file's settings by argparse destination, each checked against its flag's type."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file. Write one with `compacter train ... --print-config "
                                f"> {path.name}`.")
    spec = read_yaml_mapping(path, f"--config {path}", "flags to values (model: t5-base, task: rte, lr: 3e-4, ...)")
    actions = settings_actions(parser)
    values: dict[str, Any] = {}
    for written, value in spec.items():
        key = written.replace("-", "_")
        if key not in actions:
            raise ValueError(f"--config {path}: unknown key {written!r}{_nearest(key, actions)} The keys are the flags "
                             f"of `compacter train` without their dashes: {', '.join(actions)}.")
        if value is not None:
            values[actions[key].dest] = _checked(key, value, actions[key], path)
    return values


def merge(args: argparse.Namespace, values: dict[str, Any]) -> argparse.Namespace:
    """The command line's flags over the file's: a flag left out on the command line (None, or False for a boolean
    flag) takes the file's value; method settings (``set`` and its shortcuts ``n``, ``rank``, ...) are merged per
    setting, the command line's winning."""
    merged = argparse.Namespace(**vars(args))
    on_command_line = set(parse_assignments(args.set or [], CONFIG_KINDS.values()))
    on_command_line |= {key for key in METHOD_FLAGS if getattr(args, key, None) is not None}
    for dest, value in values.items():
        current = getattr(args, dest, None)
        if dest == "set":
            merged.set = [item for item in value if item.partition("=")[0] not in on_command_line] + (args.set or [])
        elif dest in METHOD_FLAGS and dest in on_command_line:
            continue
        elif current is None or current is False:
            setattr(merged, dest, value)
    return merged


def config_text(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """The YAML of every key of ``args`` (``null``: the default), which ``--config`` reads back as the same run."""
    settings: dict[str, Any] = {}
    for key, action in settings_actions(parser).items():
        value = getattr(args, action.dest, None)
        if key == "set":
            value = parse_assignments(value or [], CONFIG_KINDS.values()) or None
        elif action.nargs == 0:  # a boolean flag
            value = bool(value)
        settings[key] = value
    return yaml.safe_dump(settings, sort_keys=False, allow_unicode=True)


def _checked(key: str, value: Any, action: argparse.Action, path: Path) -> Any:
    """``value`` as the flag's argparse type gives it, or a ValueError naming the key and what it takes."""
    where = f"--config {path}: {key}"
    if action.nargs == 0:  # a boolean flag
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}.")
        return value
    if key == "set":
        if not isinstance(value, dict) or not all(isinstance(name, str) for name in value):
            raise ValueError(f"{where} must be a mapping of method settings (e.g. set: {{share_A: false, n: 8}}), got "
                             f"{value!r}.")
        assignments = [f"{name}={format_text(item)}" for name, item in value.items()]
        parse_assignments(assignments, CONFIG_KINDS.values(), option=f"{where}:")  # refused here, naming the setting
        return assignments
    if action.nargs in ("+", "*"):  # a list (report_to): one text or several
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(item, str) and item for item in items):
            raise ValueError(f"{where} must be a text or a list of texts, got {value!r}.")
        return items
    kind = action.type or str
    if kind is str:
        if key == "lr" and _is_number(value):  # --lr takes a number or auto
            return repr(float(value))
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where} must be a non-empty text, got {value!r}.")
        return value
    if kind is int and not (isinstance(value, int) and not isinstance(value, bool)):
        raise ValueError(f"{where} must be a whole number, got {value!r}.")
    if kind is float and not _is_number(value):
        raise ValueError(f"{where} must be a number, got {value!r}.")
    return kind(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _nearest(key: str, actions: dict[str, argparse.Action]) -> str:
    if key in PYTHON_NAMES:
        return f"; in a config file it is {PYTHON_NAMES[key]!r}, as the flag."
    close = difflib.get_close_matches(key, list(actions), n=1)
    return f"; did you mean {close[0]!r}?" if close else "."
