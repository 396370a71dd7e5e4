"""Typed settings: every field of a settings dataclass is checked against its annotation, and text is parsed into it.

A method's config, a training run (TrainConfig) and a sweep file are dataclasses whose annotations
say what each field holds. ``check_fields(instance)`` (called from their ``__post_init__``) refuses a
value of the wrong type or out of bounds with a message that names the field and what it
accepts, so ``compacter.apply(model, "compacter", n="4")`` fails exactly like ``--set n=abc``.
``parse_text`` turns the text a user typed (``--set share_A=false``) into the field's type, or refuses it.

Annotations understood: ``bool``, ``int``, ``float``, ``str``, ``None``, ``X | Y``, ``list[X]``,
``dict[str, Any]`` and ``Any``. Bounds ride on the field's metadata, written with :func:`setting`:
``n: int = setting(4, at_least=1)``; for a list they hold for every item.

Text, per type: ``true`` / ``false`` (any case); whole numbers (``4``, not ``4.0``); finite numbers;
``none`` / ``null`` where None is allowed; a list as JSON (``["attention", "feed_forward"]``), in
brackets unquoted (``[attention, feed_forward]``) or comma-separated (``attention,feed_forward``);
anything else is taken as the text itself (a JSON string literal is unquoted).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import numbers
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

_UNSET = dataclasses.MISSING


def setting(default: Any = _UNSET, *, factory: Any = _UNSET, at_least: float | None = None, above: float | None = None,
            at_most: float | None = None, choices: Sequence[str] | None = None, non_empty: bool = False) -> Any:
    """A dataclass field with bounds that :func:`check_fields` enforces (numbers: at_least / above / at_most;
    text: choices; text and lists: non_empty)."""
    bounds = {"at_least": at_least, "above": above, "at_most": at_most,
              "choices": tuple(choices) if choices is not None else None, "non_empty": non_empty}
    metadata = {"bounds": {key: value for key, value in bounds.items() if value is not None and value is not False}}
    if factory is not _UNSET:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@functools.cache
def _fields(cls: type) -> dict[str, tuple[Any, dict]]:
    """name → (annotation, bounds) of a dataclass's fields, annotations resolved from their strings."""
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], dict(f.metadata.get("bounds", {}))) for f in dataclasses.fields(cls)}


def field_types(cls: type) -> dict[str, tuple[Any, dict]]:
    return dict(_fields(cls))


def check_fields(instance: Any, owner: str = "") -> None:
    """Check (and normalise: 3 → 3.0 for a float, a tuple → a list) every field of a dataclass instance."""
    for name, (annotation, bounds) in _fields(type(instance)).items():
        value = check_value(name, annotation, bounds, getattr(instance, name), owner)
        object.__setattr__(instance, name, value)


def check_setting(cls: type, name: str, value: Any, owner: str = "") -> Any:
    """``value`` checked against the field ``name`` of the dataclass ``cls``."""
    annotation, bounds = _fields(cls)[name]
    return check_value(name, annotation, bounds, value, owner)


def check_value(name: str, annotation: Any, bounds: dict, value: Any, owner: str = "") -> Any:
    checked = _convert(annotation, value)
    if checked is _REFUSED:  # the wrong kind of value: say which kind it was
        raise ValueError(f"{_prefix(owner)}{name} must be {describe(annotation, bounds)}, got {_shown(value)}.")
    if not _within(checked, bounds):
        raise ValueError(f"{_prefix(owner)}{name} must be {describe(annotation, bounds)}, got {value!r}.")
    return checked


def parse_text(name: str, annotation: Any, bounds: dict, text: str, owner: str = "") -> Any:
    """The value that ``text`` spells for a field of this annotation; a ValueError that says what it accepts if none."""
    value = _parse(annotation, text)
    if value is _REFUSED or not _within(value, bounds):
        raise ValueError(f"{_prefix(owner)}{name} must be {describe(annotation, bounds)}, got {text!r}.")
    return value


def parse_assignments(pairs: Iterable[str], classes: Iterable[type], option: str = "--set") -> dict[str, Any]:
    """``["n=8", "share_A=false"]`` → ``{"n": 8, "share_A": False}``, each value parsed into the type of the field
    of that name in ``classes`` (fields of one name share their type across classes)."""
    known: dict[str, tuple[Any, dict]] = {}
    for cls in classes:
        for name, spec in _fields(cls).items():
            known.setdefault(name, spec)
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{option} expects KEY=VALUE, e.g. {option} share_A=false; got {pair!r}.")
        if key == "learning_rate" and key not in known:
            raise ValueError(f"{option} {pair}: the learning rate is a setting of the run, not of the method (a saved "
                             "task does not record it): give it with --lr.")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{option} {pair}: no method has a setting {key!r}.{hint} The settings are: "
                             f"{', '.join(sorted(known))}.")
        if key in values:
            raise ValueError(f"{option} gives {key} twice; give it once.")
        annotation, bounds = known[key]
        try:
            values[key] = parse_text(key, annotation, bounds, text)
        except ValueError as error:
            raise ValueError(f"{option} {pair}: {error}") from None
    return values


def format_text(value: Any) -> str:
    """Text that :func:`parse_text` reads back as ``value`` (None → "none", lists as JSON)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        stripped = value.strip()
        quoted = len(stripped) >= 2 and stripped[0] == stripped[-1] == '"'
        return json.dumps(value) if quoted or stripped.lower() in ("none", "null") else value
    return json.dumps(value)


def describe(annotation: Any, bounds: dict | None = None) -> str:
    """What a field accepts, in words: "a whole number ≥ 1", "true or false", "a list of ... (e.g. [0, 1])"."""
    bounds = bounds or {}
    members = _members(annotation)
    if members is not None:
        words = [describe(m, bounds) for m in members if m is not type(None)]
        if type(None) in members:
            words.append("none")
        return " or ".join(words)
    if annotation is bool:
        return "true or false"
    if annotation in (int, float):
        limits = [f"≥ {_number(bounds['at_least'])}" if "at_least" in bounds else "",
                  f"> {_number(bounds['above'])}" if "above" in bounds else "",
                  f"≤ {_number(bounds['at_most'])}" if "at_most" in bounds else ""]
        limit = " and ".join(word for word in limits if word)
        noun = "a whole number" if annotation is int else "a finite number"
        return f"{noun} {limit}".strip()
    if annotation is str:
        if "choices" in bounds:
            return "one of " + ", ".join(repr(c) for c in bounds["choices"])
        return "non-empty text" if bounds.get("non_empty") else "text"
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation) or (Any,)
        some = "a non-empty list" if bounds.get("non_empty") else "a list"
        return f"{some} of {_plural(describe(item, bounds))} (e.g. {_example(item, bounds)})"
    if typing.get_origin(annotation) is dict or annotation is dict:
        return "a mapping of names to values"
    return "any value"


_REFUSED = object()


def _convert(annotation: Any, value: Any) -> Any:
    """``value`` as the annotation's type, or _REFUSED. Never guesses across kinds: "4" is not 4, 4.0 is not 4."""
    members = _members(annotation)
    if members is not None:
        for member in members:
            converted = _convert(member, value)
            if converted is not _REFUSED:
                return converted
        return _REFUSED
    if annotation is Any:
        return value
    if annotation is type(None):
        return None if value is None else _REFUSED
    if annotation is bool:
        return value if isinstance(value, bool) else _REFUSED
    if annotation is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        return _REFUSED
    if annotation is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        return _REFUSED
    if annotation is str:
        return value if isinstance(value, str) else _REFUSED
    origin = typing.get_origin(annotation)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            return _REFUSED
        (item,) = typing.get_args(annotation) or (Any,)
        items = [_convert(item, v) for v in value]
        return _REFUSED if any(i is _REFUSED for i in items) else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            return _REFUSED
        return dict(value)
    raise TypeError(f"settings: no rule for the annotation {annotation!r}")  # a programming error, not bad input


def _parse(annotation: Any, text: str) -> Any:
    members = _members(annotation)
    if members is not None:
        if type(None) in members and text.strip().lower() in ("none", "null"):
            return None
        for member in members:
            if member is not type(None):
                value = _parse(member, text)
                if value is not _REFUSED:
                    return value
        return _REFUSED
    stripped = text.strip()
    if annotation is type(None):
        return None if stripped.lower() in ("none", "null") else _REFUSED
    if annotation is bool:
        return {"true": True, "false": False}.get(stripped.lower(), _REFUSED)
    if annotation is int:
        try:
            return int(stripped)
        except ValueError:
            return _REFUSED
    if annotation is float:
        try:
            value = float(stripped)
        except ValueError:
            return _REFUSED
        return value if math.isfinite(value) else _REFUSED
    if annotation is str:
        if len(stripped) >= 2 and stripped[0] == stripped[-1] == '"':
            try:
                decoded = json.loads(stripped)
            except json.JSONDecodeError:
                return text
            return decoded if isinstance(decoded, str) else text
        return text
    origin = typing.get_origin(annotation)
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        if stripped.startswith("[") and stripped.endswith("]"):
            try:
                return _convert(annotation, json.loads(stripped))
            except json.JSONDecodeError:  # [attention, feed_forward]: the items unquoted
                stripped = stripped[1:-1].strip()
        if not stripped:
            return []
        items = [_parse(item, part.strip()) for part in stripped.split(",")]
        return _REFUSED if any(i is _REFUSED for i in items) else items
    if origin is dict or annotation is dict:
        try:
            return _convert(annotation, json.loads(text))
        except json.JSONDecodeError:
            return _REFUSED
    if annotation is Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    raise TypeError(f"settings: no rule for the annotation {annotation!r}")


def _within(value: Any, bounds: dict) -> bool:
    if isinstance(value, list):  # the bounds hold for every item; non_empty for the list too
        return not (bounds.get("non_empty") and not value) and all(_within(item, bounds) for item in value)
    if isinstance(value, str):
        if bounds.get("non_empty") and not value.strip():
            return False
        return "choices" not in bounds or value in bounds["choices"]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (("at_least" not in bounds or value >= bounds["at_least"])
                and ("above" not in bounds or value > bounds["above"])
                and ("at_most" not in bounds or value <= bounds["at_most"]))
    return True


def _members(annotation: Any) -> tuple | None:
    """The members of a union (``int | None``), or None when the annotation is not one."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return None


def _prefix(owner: str) -> str:
    return f"{owner}: " if owner else ""


def _shown(value: Any) -> str:
    """The value and its kind: "'4' (text)", "4.0 (a number)"."""
    kind = {str: "text", bool: "a boolean", list: "a list", tuple: "a tuple", dict: "a mapping"}.get(type(value))
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if kind is None and isinstance(value, numbers.Real):
        kind = "a whole number" if isinstance(value, numbers.Integral) else "a number"
    return f"{value!r} ({kind or type(value).__name__})"


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _plural(words: str) -> str:
    for single, many in (("a whole number", "whole numbers"), ("a finite number", "finite numbers"),
                         ("non-empty text", "non-empty texts"), ("true or false", "true/false values"),
                         ("one of ", "items from ")):
        words = words.replace(single, many)
    return words


def _example(item: Any, bounds: dict) -> str:
    members = _members(item)
    if members is not None:
        item = next(m for m in members if m is not type(None))
    if "choices" in bounds:
        return "[" + ", ".join(bounds["choices"][:2]) + "]"
    if item is int:
        low = int(bounds.get("at_least", 0))
        return f"[{low}, {low + 1}]"
    if item is float:
        return "[0.1, 0.2]"
    return "[a, b]"
