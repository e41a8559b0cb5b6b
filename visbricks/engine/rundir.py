"""Run folders ``<project>/<task>/<name>``; an existing name is never reused (name-2, ...)."""

from __future__ import annotations

import os
from pathlib import Path


def new_run_dir(project: str | Path, task: str, name: str) -> Path:
    base = Path(project) / task
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
