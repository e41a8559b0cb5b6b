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

from ..errors import ConfigError
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


# torch's words when a BatchNorm layer in training mode gets one value per channel.
_ONE_VALUE = "Expected more than 1 value per channel when training"


def training_forward(task: TrainableTask, model: nn.Module, batch: dict) -> dict:
    """``task.forward`` of a model in training mode (the Trainer, the lr range test, the
    batch-size probe). A batch of one image whose deepest feature map is 1x1 (batch_size=1 at a
    small img_size, or a train set of one image) gives a BatchNorm layer a single value per
    channel: torch's ValueError from deep inside the model becomes one line naming the keys.
    Which backbone, neck and img_size end at 1x1 is only known here, so no config check can."""
    try:
        return task.forward(model, batch)
    except ValueError as e:
        if _ONE_VALUE not in str(e):
            raise
        raise ConfigError(
            "a training batch of one image reached a BatchNorm layer at a 1x1 feature map (one "
            "value per channel, which it cannot normalise); use batch_size >= 2 (per process) "
            "with at least 2 training images, or a larger img_size"
        ) from None
