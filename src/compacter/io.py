"""Files written so that a crash never leaves half of one, and read so that a writer is never seen half-way.

A file is written beside itself and renamed over (``atomic_write``); a folder of files that belong together
(an adapter) is written whole beside itself and swapped in with one exchange of names (``replace_folder``).
Temporary names carry the writer's pid: what a killed writer left is removed by the next write.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """``write(tmp)`` fills a temporary file in the same folder, which then replaces ``path`` in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path.name))
    os.close(handle)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; give them the usual permissions
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        said = _disk_error(error, path)
        if said is error:
            raise
        raise said from None


def replace_folder(folder: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` fills a temporary folder beside ``folder``, which then takes ``folder``'s place in one exchange
    of names: a reader (``read_files``) finds the old files or the new ones, never some of each."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder.parent, folder.name)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=_temporary_prefix(folder.name)))
    try:
        write(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        for entry in tmp.iterdir():  # writers may make their files private (safetensors does)
            os.chmod(entry, 0o666 & ~_umask())
        if not folder.exists():
            os.rename(tmp, folder)
        elif not _exchange(tmp, folder):  # no renameat2 here: two renames, a moment without the folder
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=_temporary_prefix(folder.name)))
            os.rename(folder, old / "old")
            os.rename(tmp, folder)
            tmp = old
        shutil.rmtree(tmp, ignore_errors=True)  # the old files
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        said = _disk_error(error, folder)
        if said is error:
            raise
        raise said from None


def read_files(folder: Path, names: Iterable[str], *, follow_symlinks: bool = True) -> dict[str, bytes | None]:
    """The content of ``folder``'s files ``names`` (None: missing), all from one version of the folder, read through
    one handle on it; ``follow_symlinks=False`` refuses a file that is a symbolic link (OSError ELOOP)."""
    names = list(names)
    for attempt in range(3):
        flags = os.O_RDONLY | os.O_DIRECTORY | (0 if follow_symlinks else os.O_NOFOLLOW)
        directory = os.open(folder, flags)
        try:
            found = {}
            for name in names:
                try:
                    handle = os.open(name, os.O_RDONLY | (0 if follow_symlinks else os.O_NOFOLLOW), dir_fd=directory)
                except FileNotFoundError:
                    found[name] = None
                    continue
                with os.fdopen(handle, "rb") as file:
                    found[name] = file.read()
        finally:
            os.close(directory)
        if all(content is not None for content in found.values()) or attempt == 2:
            return found
        time.sleep(0.05)  # a file is missing: perhaps a writer swapped the folder just now; read the new one
    return found


def remove_stale_temporaries(folder: Path, name: str) -> None:
    """Temporary files and folders of ``name`` that a writer which is no longer running left in ``folder``."""
    prefix = f".{name}."
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            pid = entry.name[len(prefix):].split(".", 1)[0] if entry.name.startswith(prefix) else ""
            if pid.isdigit() and not _running(int(pid)):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


def _temporary_prefix(name: str) -> str:
    return f".{name}.{os.getpid()}."


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths' names in one step (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_current_directory, exchange = -100, 2
    if renameat2(at_current_directory, os.fsencode(first), at_current_directory, os.fsencode(second), exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a file system without it
        return False
    raise OSError(code, os.strerror(code), str(second))


def _disk_error(error: BaseException, path: Path) -> BaseException:
    """A full disk or a read-only one said in words (safetensors wraps the OS error in its own text)."""
    code = getattr(error, "errno", None)
    if code == errno.ENOSPC or "No space left on device" in str(error) or "StorageFull" in str(error):
        return OSError(errno.ENOSPC, f"No space left on the device that holds {path.parent}: nothing was written to "
                                    f"{path.name} (its previous version, if any, is intact). Free some space and run "
                                    "again.")
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return OSError(code, f"{path.parent} cannot be written to ({os.strerror(code)}); give a folder you can "
                             "write to.")
    return error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
