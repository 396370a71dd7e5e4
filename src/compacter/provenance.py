"""Which code produced a file: the package version and, when compacter runs from a git checkout, the commit.

Every ``results.json`` and every saved adapter's ``adapter_config.json`` records
:func:`code_version`. The commit is read only when this package is the ``src/compacter`` folder of a
git work tree whose ``pyproject.toml`` names compacter (an editable install or ``PYTHONPATH=src``);
an installed wheel inside some other repository (a virtual environment in a project) records none.
``dirty`` says whether tracked files differed from that commit.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import transformers

from . import __version__

PACKAGE = Path(__file__).resolve().parent
GIT_TIMEOUT_S = 10


def versions() -> dict[str, Any]:
    """What results.json records of the code that produced it: compacter (version, commit), torch, transformers,
    python."""
    code = code_version()
    return {"compacter": code["compacter"], "compacter_commit": code["commit"], "compacter_dirty": code["dirty"],
            "torch": torch.__version__, "transformers": transformers.__version__, "python": sys.version.split()[0]}


def code_version() -> dict[str, Any]:
    """{"compacter": version, "commit": hash or None, "dirty": bool or None}."""
    commit, dirty = _checkout()
    return {"compacter": __version__, "commit": commit, "dirty": dirty}


@functools.lru_cache(maxsize=1)  # one process runs one checkout
def _checkout() -> tuple[str | None, bool | None]:
    root = PACKAGE.parent.parent
    if PACKAGE.parent.name != "src" or not _names_compacter(root / "pyproject.toml") or shutil.which("git") is None:
        return None, None
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root:
        return None, None
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return commit, (None if status is None or commit is None else bool(status))


def _names_compacter(pyproject: Path) -> bool:
    try:
        return 'name = "compacter-adapters"' in pyproject.read_text(encoding="utf-8")
    except OSError:
        return False


def _git(root: Path, *arguments: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *arguments], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
