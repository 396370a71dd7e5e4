"""One writer per run folder: `train`, `--lr auto`, `sweep` and the Trainer integration hold its lock while they write.

The lock is an operating-system file lock (the ``filelock`` package) on ``D/.compacter.lock``: the
kernel releases it when its process ends, however it ends (``kill -9`` included), so a lock left by a
killed process is never in the way. The writer removes the file (while it still holds it) when it is
done, and a writer that finds it has locked a file no longer at that path locks again. Beside it,
``D/.compacter.lock.json`` names the writer (pid, host, start time) for the refusal a second writer
gets; when it names a process that is gone, the new writer takes the folder over and says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from .io import atomic_write

LOCK_FILE = ".compacter.lock"
WRITER_FILE = ".compacter.lock.json"  # who holds the lock (the lock file itself is emptied by every contender)


class FolderInUse(ValueError):
    """Another compacter process is writing to this folder."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder``'s lock (made with its parents when missing) for the ``with`` block; refused at once, naming
    the other process, when another process holds it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--output-dir {folder} is a file; give a folder (a new one, or a run's own).")
    made = [parent for parent in (folder, *folder.parents) if not parent.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_FILE, timeout=0)
    while True:
        try:
            lock.acquire()
        except Timeout:
            raise FolderInUse(f"{folder} is in use by another compacter process ({_writer(folder)}). Wait for it to "
                              "finish, or give another --output-dir.") from None
        if _holds_the_file_there(lock):
            break
        lock.release()  # the file was removed by the writer before us on its way out: lock the one there now
    try:
        _take_over(folder)
        yield folder
    finally:
        (folder / WRITER_FILE).unlink(missing_ok=True)
        (folder / LOCK_FILE).unlink(missing_ok=True)  # while held: the folder is left as this writer found it
        lock.release()
        for parent in made:  # innermost first; a folder made only for the lock (nothing written) goes again
            with contextlib.suppress(OSError):
                parent.rmdir()


def _holds_the_file_there(lock: FileLock) -> bool:
    """Whether the file ``lock`` holds is still the one at its path (a lock on a removed file guards nothing)."""
    descriptor = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
    if descriptor is None:  # a soft lock (no descriptor): nothing to compare
        return True
    try:
        there, held = os.stat(lock.lock_file), os.fstat(descriptor)
    except OSError:
        return False
    return (there.st_dev, there.st_ino) == (held.st_dev, held.st_ino)


def _take_over(folder: Path) -> None:
    previous = _read_writer(folder)
    if previous is not None:  # the lock was free, so its writer is gone: killed before it could clean up
        print(f"{folder}: taking over from compacter process {previous.get('pid')} (started "
              f"{previous.get('started')}), which ended without releasing it.", file=sys.stderr)
    writer = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())}
    atomic_write(folder / WRITER_FILE, lambda tmp: Path(tmp).write_text(json.dumps(writer), encoding="utf-8"))


def _read_writer(folder: Path) -> dict | None:
    try:
        writer = json.loads((folder / WRITER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return writer if isinstance(writer, dict) else None


def _writer(folder: Path) -> str:
    writer = _read_writer(folder)
    if writer is None:  # it holds the lock but has not written its name yet
        return "pid unknown, started just now"
    host = f" on {writer['host']}" if writer.get("host") not in (None, socket.gethostname()) else ""
    return f"pid {writer.get('pid')}{host}, started {writer.get('started')}"


__all__ = ["LOCK_FILE", "WRITER_FILE", "FolderInUse", "folder_lock"]
