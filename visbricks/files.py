"""Files that are whole or absent: atomic writes, and the temps a killed writer left behind.

The bottom layer (beside ``errors`` and ``config``): the engine's checkpoints, the metrics'
reports, the plots and the exports all write through here, so none of them needs another.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back (process-wide, but only for
    # the instant between the two calls).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[str], None], suffix: str = "") -> None:
    """Call ``write(tmp_path)`` then rename onto ``path`` (atomic on POSIX file systems).

    The file gets the permissions a plain ``open(path, "w")`` would give it (0666 minus the
    umask, so a run is readable by its owner's group), not mkstemp's private 0600.
    ``suffix`` ends the temp file's name, for writers and checkers that go by the extension
    (``.onnx``); ``write`` may verify what it wrote and raise: then no file appears at ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's pid is in the name, so remove_stale_temps can tell a temp left by a killed
    # process from one being written right now.
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.tmp{os.getpid()}.", suffix=suffix, dir=path.parent
    )
    os.close(fd)
    try:
        write(tmp)
        # After writing: some writers replace the file they are given (safetensors recreates it
        # 0600), so the mode is set on what is there now, just before it takes the final name.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically: readers see the old file or the new one."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


_TEMP_RE = re.compile(r"^\..+\.tmp(?P<pid>\d+)\.[A-Za-z0-9_]+(\.[A-Za-z0-9]+)?$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours, from before: nothing of ours is mid-write when a folder is opened
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temp files that ``atomic_write`` calls killed mid-write (kill -9, power loss)
    left in ``folder``; a temp of a process still running is kept. Returns what was removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TEMP_RE.match(p.name)
        if m and p.is_file() and not _alive(int(m["pid"])):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


