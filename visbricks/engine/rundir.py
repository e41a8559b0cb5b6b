"""Run folders ``<project>/<task>/<name>``; an existing name is never reused (name-2, ...).

Also the rules that keep outputs away from what a user gave us: a run folder is found by
checking what is there (``weights/`` next to a ``config.yaml``), never guessed from
``path.parent.parent``, and an output may not land on or inside an input.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import ConfigError


def new_run_dir(project: str | Path, task: str, name: str) -> Path:
    name = str(name)
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ConfigError(f"run name must be one folder name, got {name!r}")
    base = Path(project) / task
    if base.exists() and not base.is_dir():
        raise ConfigError(f"project: {base} exists and is not a folder")
    base.mkdir(parents=True, exist_ok=True)
    candidate, n = base / name, 1
    while True:
        try:
            # mkdir without exist_ok is the atomic claim: two runs started together get two folders.
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            n += 1
            candidate = base / f"{name}-{n}"


def unique_dir(path: str | Path) -> Path:
    """Create and return ``path``, or ``path-2``, ``path-3``, ... when it exists (never reused)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = path, 1
    while True:
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            n += 1
            candidate = path.with_name(f"{path.name}-{n}")


def run_dir_of(path: str | Path) -> Path | None:
    """The run folder a weights file or folder belongs to, or None when it is in no run folder.

    A run folder holds ``config.yaml`` and ``weights/``; a file belongs to it when it sits in
    that ``weights/``. A ``last.ckpt`` copied elsewhere belongs to no run.
    """
    path = Path(path).expanduser().resolve()
    if path.is_dir():
        if (path / "config.yaml").is_file() and (path / "weights").is_dir():
            return path
        if path.name == "weights" and (path.parent / "config.yaml").is_file():
            return path.parent
        return None
    folder = path.parent
    if folder.name == "weights" and (folder.parent / "config.yaml").is_file():
        return folder.parent
    return None


def resume_run_dir(checkpoint: str | Path, project: str | Path, task: str, name: str) -> Path:
    """Where a resumed run writes: the run folder of ``checkpoint`` when it is in one (checked),
    else a new run folder (the checkpoint then seeds it; nothing next to the copy is touched)."""
    run = run_dir_of(checkpoint)
    if run is not None:
        return run
    run = new_run_dir(project, task, name)
    print(
        f"resume: {checkpoint} is not inside a run folder (<run>/weights/last.ckpt next to "
        f"<run>/config.yaml); continuing in a new run folder {run}"
    )
    return run


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def check_output(
    out: str | Path,
    sources: Iterable[str | Path],
    what: str = "--out",
    folder: bool = True,
    around: bool = True,
) -> Path:
    """Refuse an output that would overwrite or write into an input; returns ``out``.

    ``folder``: ``out`` is a folder to create or fill (an existing *file* there is refused);
    otherwise ``out`` is a file, which may not be an input file or an existing folder.
    ``around=False`` also refuses an existing ``out`` that contains an input anywhere below it
    (a converted dataset written around its source would overwrite its images).
    """
    out_path = Path(out).expanduser()
    resolved = out_path.resolve()
    if folder and out_path.exists() and not out_path.is_dir():
        raise ConfigError(f"{what} {out}: exists and is a file; give a folder")
    if not folder and out_path.is_dir():
        raise ConfigError(f"{what} {out}: is a folder; give a file name")
    for source in sources:
        src = Path(source).expanduser().resolve()
        if resolved == src:
            raise ConfigError(
                f"{what} {out} is the input {source} itself; it would be overwritten — "
                "choose another output"
            )
        if src.is_dir() and _inside(resolved, src):
            raise ConfigError(
                f"{what} {out} is inside the input folder {source}; outputs would mix with (and "
                "on the next run be read as) inputs — choose a folder outside it"
            )
        if not around and out_path.exists() and _inside(src, resolved):
            raise ConfigError(
                f"{what} {out} contains the input {source}; writing there could overwrite it — "
                "choose a new folder"
            )
        if folder and src.is_file() and src.parent == resolved:
            # Outputs are named after inputs (predict a.png --out . writes ./a.png).
            raise ConfigError(
                f"{what} {out} holds the input {source}; an output there could overwrite it — "
                "choose another folder"
            )
    return out_path
