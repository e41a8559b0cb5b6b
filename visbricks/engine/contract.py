"""What the engine asks of a task: exactly the attributes and methods the Trainer (and, under
torchrun, engine/distributed.py) call, as a typed Protocol.

Every task of ``visbricks.tasks`` satisfies it (tests/test_architecture.py checks names and
signatures); a task written elsewhere needs nothing else to be trained. The engine never
imports the tasks layer: the task object is given to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.utils.data import Dataset

from ..metrics.base import EvalResult, Evaluator


@runtime_checkable
class TrainableTask(Protocol):
    metric: str  # what picks best.safetensors unless train.metric says otherwise
    metric_mode: str  # "max" or "min"

    def to_device(
        self, batch: dict, device: torch.device, channels_last: bool = False
    ) -> dict: ...

    def forward(self, model: nn.Module, batch: dict) -> dict: ...

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]: ...

    def batch_size(self, batch: dict) -> int: ...

    def evaluator(self, dataset: Dataset, split: str = "val") -> Evaluator: ...

    def eval_step(self, model: nn.Module, batch: dict, evaluator: Any) -> None: ...

    def evaluate(
        self,
        model: nn.Module,
        loader: Any,
        device: torch.device,
        plots_dir: Path | None = None,
        split: str = "val",
    ) -> EvalResult: ...

    def draw_batch(self, batch: dict, path: Path, outputs: dict | None = None) -> None: ...
