"""Tasks connect a config to a model and datasets; importing this registers all of them."""

from __future__ import annotations

from torch import nn

from ..config import Config
from ..registry import TASKS
from . import (  # noqa: F401
    classify,  # noqa: F401  (registers classify, multilabel)
    depth,  # noqa: F401
    detect,
    lanes,  # noqa: F401
    locate,
    segment,  # noqa: F401
)
from .base import DataBundle, Task


def build_task(cfg: Config) -> Task:
    return TASKS.get(cfg.task)(cfg)


def build_model(cfg: Config, load_pretrained: bool = True) -> nn.Module:
    """backbone → neck → head from the registries, with ``model.pretrained`` loaded."""
    return build_task(cfg).build_model(load_pretrained=load_pretrained)


def build_data(cfg: Config) -> DataBundle:
    """Train and val datasets (generating the preset's synthetic data on first use)."""
    return build_task(cfg).build_data()


__all__ = ["DataBundle", "Task", "build_data", "build_model", "build_task"]
