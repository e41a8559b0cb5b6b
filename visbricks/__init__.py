"""visbricks: build a vision model from bricks, train it with one Trainer, measure it exactly.

The heavy imports (torch, torchvision) happen on first use of an attribute, so ``visbricks
--help`` and config errors stay instant.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_config": "visbricks.config",
    "Config": "visbricks.config",
    "build_model": "visbricks.tasks",
    "build_data": "visbricks.tasks",
    "build_task": "visbricks.tasks",
    "Trainer": "visbricks.engine.trainer",
    "load_weights": "visbricks.engine.weights",
    "load_run": "visbricks.deploy.loading",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'visbricks' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
