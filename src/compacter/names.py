"""Task names: identifiers, so that a name can never say a path (a task is saved in ``<dir>/<name>``)."""

from __future__ import annotations

import re
from typing import Any

MAX_LENGTH = 100
_IDENTIFIER = re.compile(r"[A-Za-z0-9_-]+")


def check_task_name(name: Any, where: str = "A task name") -> str:
    """``name`` when it is a task name (ASCII letters, digits, ``-`` and ``_``, at most 100 of them), else a
    ValueError that says what a task name may hold. ``where`` says who gave it (a file, an argument)."""
    if not isinstance(name, str):
        raise ValueError(f"{where} must be a string, got {type(name).__name__} {name!r}.")
    if not (_IDENTIFIER.fullmatch(name) and len(name) <= MAX_LENGTH):
        raise ValueError(f"{where} may hold only ASCII letters, digits, '-' and '_' (1 to {MAX_LENGTH} of them; no "
                         f"dots, spaces or path separators), got {name!r}. Use a name like 'rte' or 'sst2-v2'.")
    return name


__all__ = ["check_task_name"]
