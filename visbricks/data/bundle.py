"""What a task's data preparation hands the Trainer: the two datasets and how to batch them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset


@dataclass
class DataBundle:
    train: Dataset
    val: Dataset
    classes: list[str]
    collate_fn: Callable | None = None
    # Optional batch-sampler factory (aspect-ratio grouping): (dataset, batch, generator) → sampler
    batch_sampler: Callable | None = None
    info: dict[str, Any] = field(default_factory=dict)


__all__ = ["DataBundle"]
