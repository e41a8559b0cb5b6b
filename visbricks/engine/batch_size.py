"""``batch_size: auto``: the batch a run trains with, chosen on the machine that runs it.

- **CUDA**: the largest batch whose training step (forward, backward, optimizer step, so the
  optimizer state is counted) peaks below ``tune.memory_fraction`` of the GPU's memory. The
  batch doubles from 2 until a step runs out of memory or passes the fraction (or the train set
  is exhausted), then a binary search between the last batch that fit and the first that did
  not. An out-of-memory error is caught, the cache emptied, and counts as "does not fit".
- **CPU**: memory is rarely the limit, speed is: each of ``tune.batch_candidates`` (capped by
  the train set's size) runs ``WARMUP`` untimed and ``TIMED`` timed forward + backward steps,
  and the batch with the most images per second wins.

Both measure a copy of the model (its BatchNorm statistics and gradients stay untouched) under
the run's precision and memory layout, on real batches of the train set. The choice is printed
by the Trainer and written to the run's config.yaml in place of ``auto``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..config import Config
from ..data.bundle import DataBundle
from ..errors import ConfigError
from .contract import TrainableTask, training_forward
from .optim import build_optimizer, param_groups
from .precision import resolve_amp, resolve_channels_last, to_float32

WARMUP = 1  # untimed steps per CPU candidate (first-call allocations, oneDNN kernel choice)
TIMED = 2  # timed steps per CPU candidate
MAX_CUDA_BATCH = 4096  # the doubling stops here whatever the memory says


@dataclass
class BatchChoice:
    batch_size: int
    device: str  # "cpu" or "cuda"
    # CPU: images/s per candidate; CUDA: peak MiB per tried batch (None: out of memory).
    measured: dict[int, float | None] = field(default_factory=dict)
    limit_mib: float | None = None  # CUDA: the memory fraction, in MiB

    def describe(self) -> str:
        if self.device == "cpu":
            cells = ", ".join(f"{b}: {v:.1f}" for b, v in self.measured.items() if v is not None)
            return (
                f"batch_size=auto: {self.batch_size} (most images/s on this CPU; "
                f"forward+backward img/s per batch: {cells})"
            )
        cells = ", ".join(
            f"{b}: {'OOM' if v is None else f'{v:.0f} MiB'}" for b, v in self.measured.items()
        )
        return (
            f"batch_size=auto: {self.batch_size} (largest whose training step peaks below "
            f"{self.limit_mib:.0f} MiB; tried {cells})"
        )


def first_batch(data: DataBundle, size: int) -> dict:
    """The first ``size`` training samples as one batch (no shuffling: the same every time)."""
    loader = DataLoader(data.train, batch_size=size, shuffle=False, collate_fn=data.collate_fn)
    return next(iter(loader))


def training_copy(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    # On CUDA the copy's weights count on top of the model's own: a conservative margin.
    work = copy.deepcopy(model).to(device)
    if channels_last:
        work = work.to(memory_format=torch.channels_last)
    work.train()
    return work


def choose_batch_size(
    cfg: Config,
    model: nn.Module,
    data: DataBundle,
    task: TrainableTask,
    device: torch.device,
) -> BatchChoice:
    """The batch ``batch_size: auto`` stands for on ``device`` (module docstring)."""
    n = len(data.train)
    if n < 1:
        raise ConfigError("batch_size=auto: the train set is empty")
    precision = resolve_amp(cfg.train.amp, device)
    channels_last = resolve_channels_last(cfg.model.channels_last, device, precision)
    work = training_copy(model, device, channels_last)

    def step(batch: dict) -> None:
        forward_backward(task, work, batch, precision)

    if device.type == "cuda":
        return _largest_fitting(cfg, work, data, task, device, channels_last, step, n)
    return _fastest(cfg, work, data, task, device, channels_last, precision, n)


def forward_backward(task: TrainableTask, work: nn.Module, batch: dict, precision) -> None:
    """Forward, loss and backward of a measuring copy under ``precision`` (no optimizer step)."""
    with precision.autocast():
        outputs = training_forward(task, work, batch)
    task.loss(to_float32(outputs), batch)["loss"].backward()


def images_per_second(
    task: TrainableTask, work: nn.Module, batch: dict, precision, timed: int = TIMED
) -> float:
    """Training images/s of ``work`` on ``batch`` (on its device): ``WARMUP`` untimed, then
    ``timed`` timed forward + backward steps, the gradients dropped after each."""
    for i in range(WARMUP + timed):
        if i == WARMUP:
            start = time.perf_counter()
        forward_backward(task, work, batch, precision)
        work.zero_grad(set_to_none=True)
    return timed * task.batch_size(batch) / max(time.perf_counter() - start, 1e-9)


def _fastest(cfg, work, data, task, device, channels_last, precision, n: int) -> BatchChoice:
    candidates = sorted({min(int(b), n) for b in cfg.tune.batch_candidates})
    choice = BatchChoice(candidates[0], device.type)
    best = -1.0
    for size in candidates:
        batch = task.to_device(first_batch(data, size), device, channels_last)
        rate = images_per_second(task, work, batch, precision)
        choice.measured[size] = rate
        if rate > best:
            best, choice.batch_size = rate, size
    return choice


def _largest_fitting(cfg, work, data, task, device, channels_last, step, n: int) -> BatchChoice:
    total = torch.cuda.get_device_properties(device).total_memory
    limit = float(cfg.tune.memory_fraction) * total
    groups = param_groups(work, 0.0, 0.0, {}, ())
    optimizer = build_optimizer({**cfg.optim, "lr": 0.0}, groups)  # its state takes memory too
    choice = BatchChoice(1, "cuda", limit_mib=limit / 2**20)

    def fits(size: int) -> bool:
        peak: float | None = None
        try:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            batch = task.to_device(first_batch(data, size), device, channels_last)
            step(batch)
            optimizer.step()
            torch.cuda.synchronize(device)
            peak = float(torch.cuda.max_memory_allocated(device))
        except torch.cuda.OutOfMemoryError:
            peak = None
        finally:
            batch = None  # noqa: F841 - the batch's memory goes before the next try
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
        choice.measured[size] = None if peak is None else peak / 2**20
        return peak is not None and peak <= limit

    good, bad = 0, None
    size = min(2, n)
    while True:  # doubling: the first size that does not fit bounds the search
        if fits(size):
            good = size
            if size >= min(n, MAX_CUDA_BATCH):
                break
            size = min(size * 2, n, MAX_CUDA_BATCH)
        else:
            bad = size
            break
    if good == 0:
        if size > 1 and fits(1):
            good = 1
        else:
            raise ConfigError(
                "batch_size=auto: not even a batch of 1 fits in "
                f"tune.memory_fraction={cfg.tune.memory_fraction} of the GPU's memory"
            )
    if bad is not None:
        while bad - good > 1:  # binary search: good fits, bad does not
            mid = (good + bad) // 2
            if fits(mid):
                good = mid
            else:
                bad = mid
    choice.batch_size = good
    return choice
