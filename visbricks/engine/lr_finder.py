"""The learning-rate range test (Smith 2015; fastai's and Lightning's ``lr_find``).

The learning rate grows exponentially from ``tune.lr_start`` to ``tune.lr_end`` over N optimizer
steps on the task's own training batches, loss and optimizer, and the loss of each batch is
recorded. The sweep runs on a *copy* of the model with a fresh optimizer, so the model it is
given (and its BatchNorm statistics) is bitwise unchanged afterwards; the global RNGs are put
back too.

- N is ``tune.lr_steps`` (default 100), at most one pass over the train set (each batch seen
  once: a repeated batch would measure memorisation), but at least ``MIN_STEPS`` (a short train
  set is then cycled, or there would be no curve).
- The curve is smoothed by an exponential moving average with bias correction
  (``avg = β·avg + (1-β)·loss``, shown as ``avg / (1-β^k)``). β = 1 - 2/N (0.98 at N = 100,
  fastai's and Lightning's value), so the average spans the same share of the sweep at any N.
- The sweep stops early when the smoothed loss exceeds ``DIVERGE_FACTOR`` (4) × its minimum, or
  a loss is not finite: past that point the run diverges and further steps say nothing.
- The suggestion is the **steepest descent** of the smoothed curve: the learning rate where
  d(smoothed loss)/d(log10 lr) is most negative, looked for between the first tenth of the
  sweep (where the average is still settling) and the curve's minimum (beyond it the loss
  rises). A curve that never visibly falls (the model needs more steps than the sweep has)
  gives a tenth of the lr where the loss starts to rise instead, and one that neither falls
  nor rises a tenth of its minimum's lr; ``LRFindResult.rule`` says which applied.
"""

from __future__ import annotations

import copy
import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from ..config import Config
from ..data.bundle import DataBundle
from ..errors import ConfigError
from ..files import atomic_write
from .checkpoint import get_rng_state, seed_everything, set_rng_state
from .contract import TrainableTask, training_forward
from .optim import build_optimizer, param_groups
from .precision import resolve_amp, resolve_channels_last, resolve_workers, to_float32

MIN_STEPS = 20  # fewer points than this make no curve to read a slope from
DIVERGE_FACTOR = 4.0  # stop once the smoothed loss exceeds this many times its minimum
SKIP_START = 0.1  # share of the sweep ignored by the suggestion: the average still settles
MIN_DESCENT = 0.05  # a smoothed fall smaller than this share of the loss is noise, not descent
RISE = 0.1  # the loss "starts to rise" once it is this share above its running minimum
PLOT_NAME = "lr_find.png"
CSV_NAME = "lr_find.csv"


@dataclass
class LRFindResult:
    lrs: list[float]  # the base learning rate of each step run (param groups scale it by lr_mult)
    losses: list[float]  # the raw batch loss at each step
    smoothed: list[float]  # its bias-corrected moving average
    suggestion: float
    rule: str  # how the suggestion was read off the curve
    start: float
    end: float
    planned: int  # steps of the full sweep
    stopped: str | None = None  # why the sweep ended before ``planned`` steps, or None
    plot: Path | None = None
    table: Path | None = None

    def format(self) -> str:
        """What ``visbricks tune lr`` prints."""
        ran = len(self.lrs)
        lines = [
            f"lr range test: {ran} step{'s' * (ran != 1)} of {self.planned} from "
            f"{self.start:.1e} to {self.end:.1e}"
            + (f" (stopped: {self.stopped})" if self.stopped else ""),
            f"{'lr':>10}  {'loss':>9}  {'smoothed':>9}",
        ]
        shown = sorted(set(np.linspace(0, ran - 1, min(ran, 12)).round().astype(int).tolist()))
        for i in shown:
            lines.append(f"{self.lrs[i]:>10.2e}  {self.losses[i]:>9.4f}  {self.smoothed[i]:>9.4f}")
        best = int(np.argmin(self.smoothed))
        lines.append(
            f"suggested optim.lr={self.suggestion:.2e} ({self.rule}; the smoothed loss is "
            f"lowest, {self.smoothed[best]:.4f}, at lr {self.lrs[best]:.2e})"
        )
        if self.plot is not None:
            lines.append(f"plot: {self.plot}")
        return "\n".join(lines)


def smooth(losses: Sequence[float], beta: float) -> list[float]:
    """Exponential moving average with bias correction (the first value is the first loss)."""
    avg, out = 0.0, []
    for k, loss in enumerate(losses, 1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**k))
    return out


def beta_for(steps: int) -> float:
    """The smoothing factor of a sweep of ``steps`` steps: 0.98 at 100 (module docstring)."""
    return min(0.98, max(0.5, 1.0 - 2.0 / max(steps, 1)))


def suggest_lr(lrs: Sequence[float], smoothed: Sequence[float]) -> tuple[float, str]:
    """(learning rate, rule). After the first tenth of the sweep (the average still settles):

    - the steepest descent of the smoothed loss over log10(lr), between there and the curve's
      minimum, when the loss visibly falls on the way (by more than ``MIN_DESCENT``);
    - else — no lr made the loss fall within the sweep (a model that needs more steps than the
      sweep has, as a from-scratch ResNet on shapes) — a tenth of the lr where the smoothed loss
      first rises ``RISE`` above its running minimum: the edge of stability, which the curve
      does show (Smith's range test reads the largest usable lr off that edge);
    - a tenth of the minimum's lr when the curve never rises that much either.
    """
    if len(lrs) != len(smoothed) or not lrs:
        raise ValueError("suggest_lr needs one smoothed loss per learning rate")
    x = np.log10(np.asarray(lrs, dtype=np.float64))
    y = np.asarray(smoothed, dtype=np.float64)
    first = max(1, int(len(y) * SKIP_START)) if len(y) >= 10 else 0
    lowest = first + int(np.argmin(y[first:]))
    descent = y[first] - y[lowest] > MIN_DESCENT * abs(y[first])
    if descent and lowest - first + 1 >= 3:
        slope = np.gradient(y[first : lowest + 1], x[first : lowest + 1])
        return float(lrs[first + int(np.argmin(slope))]), "steepest descent of the smoothed loss"
    running_min = np.minimum.accumulate(y[first:])
    rising = np.nonzero(y[first:] > running_min * (1 + RISE))[0]
    if len(rising):
        edge = first + int(rising[0])
        return float(lrs[edge]) / 10, "a tenth of the lr where the loss starts to rise (no descent)"
    return float(lrs[lowest]) / 10, "a tenth of the lr at the smoothed loss's minimum"


def sweep_lrs(start: float, end: float, steps: int) -> list[float]:
    """``steps`` learning rates from ``start`` to ``end``, equally spaced in log."""
    if steps == 1:
        return [start]
    return [start * (end / start) ** (i / (steps - 1)) for i in range(steps)]


def plot_lr_find(result: LRFindResult, path: str | Path) -> None:
    """Loss against lr (log axis): raw points, the smoothed curve, the suggestion marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(result.lrs, result.losses, ".", color="0.7", ms=3, label="batch loss")
    ax.plot(result.lrs, result.smoothed, color="C0", label="smoothed")
    y = float(np.interp(np.log10(result.suggestion), np.log10(result.lrs), result.smoothed))
    ax.plot([result.suggestion], [y], "o", color="C3", ms=8)
    ax.axvline(
        result.suggestion, color="C3", ls="--", lw=1, label=f"suggestion {result.suggestion:.2e}"
    )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    # The divergence at the end would flatten everything before it.
    top = min(max(result.smoothed), DIVERGE_FACTOR * min(result.smoothed)) * 1.1
    ax.set_ylim(min(min(result.losses), min(result.smoothed)) * 0.95, top)
    ax.set_title(f"lr range test ({result.rule})", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def _write_csv(result: LRFindResult, path: Path) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "lr", "loss", "smoothed"])
            for i, row in enumerate(zip(result.lrs, result.losses, result.smoothed)):
                w.writerow([i, *row])

    atomic_write(path, write)


def _batches(loader: DataLoader) -> Iterator[dict]:
    """The loader's batches, again from the start when it ends (a short train set)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ConfigError("the train set gave no batch: nothing to run the lr range test on")


def lr_range_test(
    cfg: Config,
    model: nn.Module,
    data: DataBundle,
    task: TrainableTask,
    device: torch.device,
    *,
    batch_size: int | None = None,
    out_dir: str | Path | None = None,
) -> LRFindResult:
    """Run the range test on a copy of ``model`` (left untouched) and return the curve and the
    suggestion; with ``out_dir``, ``lr_find.png`` (suggestion marked) and ``lr_find.csv`` are
    written there. ``cfg.tune`` gives the sweep (``lr_start``, ``lr_end``, ``lr_steps``),
    ``cfg.optim`` the optimizer, ``cfg.train`` amp, clipping, lr_mult and the modules frozen at
    the start; ``batch_size`` defaults to ``cfg.batch_size`` (which must be a number then)."""
    t = cfg.tune
    start, end = float(t.lr_start), float(t.lr_end)
    if not end > start:
        raise ConfigError(f"tune.lr_end ({end:g}) must be larger than tune.lr_start ({start:g})")
    bs = int(batch_size if batch_size is not None else cfg.batch_size)
    precision = resolve_amp(cfg.train.amp, device)
    channels_last = resolve_channels_last(cfg.model.channels_last, device, precision)
    workers = resolve_workers(
        cfg.workers, device, bool(cfg.data.cache), deterministic=bool(cfg.deterministic)
    )
    generator = torch.Generator().manual_seed(int(cfg.seed))
    common = dict(num_workers=workers, collate_fn=data.collate_fn)
    if data.batch_sampler is not None:
        sampler = data.batch_sampler(data.train, bs, generator)
        loader = DataLoader(data.train, batch_sampler=sampler, **common)
    else:
        loader = DataLoader(
            data.train,
            batch_size=bs,
            sampler=RandomSampler(data.train, generator=generator),
            drop_last=len(data.train) > bs,
            **common,
        )
    steps = min(int(t.lr_steps), max(len(loader), MIN_STEPS))
    lrs = sweep_lrs(start, end, steps)
    beta = beta_for(steps)

    # The copy trains; the model given is never touched (nor are its BatchNorm statistics).
    work = copy.deepcopy(model).to(device)
    if channels_last:
        work = work.to(memory_format=torch.channels_last)
    frozen = {name for name, until in dict(cfg.train.freeze).items() if until > 0}
    work.train()
    for name in frozen:
        work.get_submodule(name).requires_grad_(False).eval()
    groups = param_groups(work, start, cfg.optim.weight_decay, dict(cfg.train.lr_mult), frozen)
    optimizer = build_optimizer({**cfg.optim, "lr": start}, groups)
    mults = [g["lr"] / start for g in optimizer.param_groups]  # lr_mult of each group
    scaler = torch.amp.GradScaler(device.type, enabled=precision.needs_scaler)
    clip = cfg.train.grad_clip

    rng = get_rng_state()  # the sweep's augmentation draws are seeded, then put back
    seed_everything(int(cfg.seed))
    raw: list[float] = []
    smoothed: list[float] = []
    stopped = None
    avg = 0.0
    try:
        batches = _batches(loader)
        for k, lr in enumerate(lrs, 1):
            for group, mult in zip(optimizer.param_groups, mults):
                group["lr"] = lr * mult
            batch = task.to_device(next(batches), device, channels_last)
            with precision.autocast():
                outputs = training_forward(task, work, batch)
            loss = task.loss(to_float32(outputs), batch)["loss"]
            value = float(loss.detach())
            if not math.isfinite(value):
                stopped = f"loss {value} at lr {lr:.2e}"
                break
            scaler.scale(loss).backward()
            if clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(work.parameters(), clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            avg = beta * avg + (1 - beta) * value
            raw.append(value)
            smoothed.append(avg / (1 - beta**k))
            if smoothed[-1] > DIVERGE_FACTOR * min(smoothed):
                stopped = (
                    f"smoothed loss {smoothed[-1]:.4g} > {DIVERGE_FACTOR:g}x its minimum "
                    f"{min(smoothed):.4g} at lr {lr:.2e}"
                )
                break
    finally:
        set_rng_state(rng)
        del work, optimizer
    if not raw:
        raise ConfigError(
            f"lr range test: the first step's loss is not finite ({stopped}); "
            "lower tune.lr_start or check the data"
        )
    ran = lrs[: len(raw)]
    suggestion, rule = suggest_lr(ran, smoothed)
    result = LRFindResult(ran, raw, smoothed, suggestion, rule, start, end, steps, stopped)
    if out_dir is not None:
        save_lr_find(result, out_dir)
    return result


def save_lr_find(result: LRFindResult, out_dir: str | Path) -> None:
    """``lr_find.png`` (the curve, the suggestion marked) and ``lr_find.csv`` in ``out_dir``;
    their paths go to ``result.plot`` and ``result.table``."""
    out_dir = Path(out_dir)
    result.plot, result.table = out_dir / PLOT_NAME, out_dir / CSV_NAME
    plot_lr_find(result, result.plot)
    _write_csv(result, result.table)
