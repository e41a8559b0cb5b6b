"""``model.channels_last: auto`` for fp32 training on a CPU: the layout measured on the run's model.

On CUDA and under CPU bf16 autocast channels-last is a rule (engine/precision.py). In fp32 on a
CPU the gain depends on the model and the machine: on an AMD EPYC (2 threads,
``bench/train_speed.py``) the Trainer trained ResNet-18 at 224 px, batch 16, 1.28x faster
channels-last (33.9 vs 26.5 img/s: 83 % of the fp32 GEMM peak against 65 %), a training step of
the demo SSD at 128 px only 1.07x faster (an earlier row of docs/benchmarks.md has it 0.88x as
fast). So there the Trainer times ``TIMED`` forward + backward steps (after an untimed one) of a
copy of the model in each layout, on one real training batch, and trains channels-last only
when that is at least ``MARGIN`` faster: a near tie keeps NCHW, so noise does not flip the layout
of identical runs.

Deterministic runs skip the probe and keep NCHW (their results must not depend on a timing); a
resumed run keeps its first start's choice. The choice is printed and written to config.yaml, as
``batch_size: auto``'s is (engine/batch_size.py, whose copy-and-measure helpers this reuses).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import Config
from ..data.bundle import DataBundle
from .batch_size import first_batch, images_per_second, training_copy
from .contract import TrainableTask
from .precision import resolve_amp

TIMED = 3  # timed steps per layout
MARGIN = 1.05  # channels-last must be this much faster to be chosen


@dataclass
class LayoutChoice:
    channels_last: bool
    measured: dict[str, float] = field(default_factory=dict)  # images/s per layout

    def describe(self) -> str:
        cells = ", ".join(f"{name} {rate:.1f}" for name, rate in self.measured.items())
        return (
            f"model.channels_last=auto: {'on' if self.channels_last else 'off'} (fp32 on this "
            f"CPU, forward+backward img/s: {cells}; channels-last needs {MARGIN:.2f}x)"
        )


def layout_probe_applies(cfg: Config, device: torch.device) -> bool:
    """Whether ``auto`` means "measure" here: fp32 on a CPU, not a deterministic run."""
    if cfg.model.channels_last not in (None, "auto") or device.type != "cpu":
        return False
    return not cfg.deterministic and resolve_amp(cfg.train.amp, device).mode == "fp32"


def choose_channels_last(
    cfg: Config,
    model: nn.Module,
    data: DataBundle,
    task: TrainableTask,
    device: torch.device,
    batch_size: int,
) -> LayoutChoice:
    """The faster layout for training ``model`` on ``device`` in fp32 (module docstring)."""
    choice = LayoutChoice(False)
    if len(data.train) < 1:
        return choice  # nothing to time: the rule's NCHW (the Trainer reports the empty set)
    precision = resolve_amp(cfg.train.amp, device)
    batch = first_batch(data, min(max(1, int(batch_size)), len(data.train)))
    for name, channels_last in (("NCHW", False), ("channels-last", True)):
        work = training_copy(model, device, channels_last)
        moved = task.to_device(batch, device, channels_last)
        choice.measured[name] = images_per_second(task, work, moved, precision, TIMED)
    choice.channels_last = choice.measured["channels-last"] >= MARGIN * choice.measured["NCHW"]
    return choice
