"""Generate a dataset once and publish it whole: the one implementation every generator uses.

A preset that generates its data on first use only checks that the folder exists, so the folder
must never exist half-written. The dataset is built in ``<out>.tmp-<pid>``, a ``.complete``
marker holding the generation parameters is written last, and the folder is renamed into place
in one ``os.replace``. An existing ``out`` is reused when its marker holds the same parameters
and refused otherwise (it is someone else's dataset, or an interrupted copy).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ...errors import DataError

COMPLETE_MARKER = ".complete"


def read_marker(out: Path) -> dict[str, Any] | None:
    """The parameters in ``out/.complete`` (JSON or YAML), or None when there is no marker."""
    marker = out / COMPLETE_MARKER
    if not marker.is_file():
        return None
    try:
        found = yaml.safe_load(marker.read_text())  # JSON is YAML: one reader for both
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"cannot read {marker}: {e}; remove {out} to regenerate it") from None
    if not isinstance(found, dict):
        raise DataError(f"{marker} is not a parameter mapping; remove {out} to regenerate it")
    return found


def reuse(out: Path, params: dict[str, Any], what: str = "synthetic dataset") -> Path:
    """``out`` when it holds exactly the dataset ``params`` describes; DataError otherwise."""
    found = read_marker(out)
    if found is None:
        raise DataError(
            f"{out} exists but has no {COMPLETE_MARKER} marker, so it is not a complete {what} "
            "(an interrupted copy or someone else's folder); remove it or choose another "
            "output folder"
        )
    if found != params:
        diff = ", ".join(
            f"{k}={found.get(k)!r} (wanted {params.get(k)!r})"
            for k in sorted(set(found) | set(params))
            if found.get(k) != params.get(k)
        )
        raise DataError(
            f"{out} holds a {what} generated with different parameters: {diff}; "
            "remove it or choose another output folder"
        )
    return out


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_work(out: Path) -> list[Path]:
    """Delete the ``<out>.tmp-<pid>`` folders of generators that were killed (their pid no
    longer runs); a generation still running elsewhere keeps its folder."""
    removed = []
    if not out.parent.is_dir():
        return removed
    for work in out.parent.glob(f"{out.name}.tmp-*"):
        pid = work.name.rsplit("-", 1)[-1]
        if pid.isdigit() and work.is_dir() and not _pid_alive(int(pid)):
            shutil.rmtree(work, ignore_errors=True)
            removed.append(work)
    return removed


def generate_once(
    out: str | Path,
    params: dict[str, Any],
    build: Callable[[Path], Path | None],
    marker_text: Callable[[dict[str, Any]], str],
    what: str = "synthetic dataset",
) -> Path:
    """Run ``build(work_dir)`` and publish its result at ``out`` atomically; returns ``out``.

    ``build`` fills ``work_dir`` (or returns the folder inside it that is the dataset);
    ``marker_text(params)`` is what the ``.complete`` marker holds. An empty ``out`` (made by
    ``mkdir -p``) counts as absent. If a concurrent process publishes the same dataset first,
    its copy is kept.
    """
    out = Path(out)
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()  # an empty folder made for the purpose holds nothing to protect
    if out.exists():
        return reuse(out, params, what)
    remove_stale_work(out)
    work = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    if work.exists():  # left by an earlier, killed process that happened to have our pid
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        data = build(work) or work
        (data / COMPLETE_MARKER).write_text(marker_text(params))
        try:
            os.replace(data, out)
        except OSError:
            if not out.exists():
                raise
            return reuse(out, params, what)  # a concurrent process published it first
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out
