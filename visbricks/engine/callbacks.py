"""What happens around the training loop, as ordered callbacks: the Trainer steps and validates;
results.csv, best weights, checkpoints, plots, TensorBoard, progress and early stopping hook in.

A callback subclasses :class:`Callback`, overrides the events it needs and is chosen by config
alone once registered: ``@CALLBACKS.register("name")`` and ``train.callbacks=[name]`` (or passed
to ``Trainer(callbacks=[...])``). Within one event callbacks run by ``order`` (lower first); the
built-in ones keep the order the files were always written in (results, then the checkpoint
that a resume reads them with). ``main_only`` callbacks run on rank 0 alone under torchrun.

Events, in the order of one epoch: ``on_fit_start``; per epoch ``on_train_epoch_start``, per
batch ``on_train_batch_start`` (its time is not counted in the epoch's img/s) and
``on_train_batch_end``, ``on_train_epoch_end``; after the epoch's validation (if any) and the
best-metric bookkeeping ``on_validation_end``; after the time budget's planning
``on_epoch_end``; last ``on_fit_end``.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from ..errors import ConfigError
from ..files import atomic_write_text
from ..registry import CALLBACKS
from .checkpoint import save_checkpoint, save_safetensors
from .plots import plot_history

if TYPE_CHECKING:
    from .trainer import Trainer

EVENTS = (
    "on_fit_start",
    "on_train_epoch_start",
    "on_train_batch_start",
    "on_train_batch_end",
    "on_train_epoch_end",
    "on_validation_end",
    "on_epoch_end",
    "on_fit_end",
)


@dataclass(frozen=True)
class EpochEnd:
    """One finished epoch as the callbacks see it."""

    epoch: int  # 0-based
    row: dict[str, Any]  # what results.csv gets for it
    validated: bool
    improved: bool  # the metric beat the best so far (best.safetensors is then these weights)
    value: float | None  # the metric's value, None when not validated


class Callback:
    """Hooks of the training loop; each does nothing unless overridden."""

    order = 50
    main_only = True

    def on_fit_start(self, trainer: Trainer) -> None:
        pass

    def on_train_epoch_start(self, trainer: Trainer, epoch: int, n_batches: int) -> None:
        pass

    def on_train_batch_start(self, trainer: Trainer, index: int, batch: dict) -> None:
        pass

    def on_train_batch_end(self, trainer: Trainer, index: int, stats: dict[str, str]) -> None:
        pass

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        pass

    def on_validation_end(self, trainer: Trainer, end: EpochEnd) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, end: EpochEnd) -> None:
        pass

    def on_fit_end(self, trainer: Trainer) -> None:
        pass


def overrides(callback: Callback, event: str) -> bool:
    return getattr(type(callback), event) is not getattr(Callback, event)


# ---- the built-in callbacks --------------------------------------------------------------------


class BestWeights(Callback):
    """best.safetensors (+ best.yaml: epoch, metrics, classes, config) when the metric improves."""

    order = 10

    def on_validation_end(self, trainer: Trainer, end: EpochEnd) -> None:
        if not end.improved:
            return
        save_safetensors(
            trainer.eval_model().state_dict(), trainer.weights_dir / "best.safetensors"
        )
        info = {
            "epoch": trainer.epoch,
            "metrics": {k: float(v) for k, v in end.row.items() if not isinstance(v, str)},
            "classes": list(trainer.data.classes),
            "config": trainer.cfg.to_dict(),
        }
        atomic_write_text(trainer.weights_dir / "best.yaml", yaml.safe_dump(info, sort_keys=False))


class ValidationPlots(Callback):
    """The validation's figures (PR curve, confusion matrix, predictions.png) move into plots/
    when they show the weights best.safetensors holds (what eval uses), also after a resume."""

    order = 20

    def on_validation_end(self, trainer: Trainer, end: EpochEnd) -> None:
        if not (end.validated and (end.improved or end.value is None)):
            return
        staging = trainer.staging_dir
        if not staging.is_dir():
            return
        for item in staging.iterdir():
            target = trainer.plots_dir / item.name
            if item.is_dir():
                shutil.rmtree(target, ignore_errors=True)
                shutil.move(str(item), str(target))
            else:
                item.replace(target)


class SamplesPlot(Callback):
    """samples.png: the first training batch of every epoch, as augmented."""

    def on_train_batch_start(self, trainer: Trainer, index: int, batch: dict) -> None:
        if index == 0:
            trainer.task.draw_batch(batch, trainer.plots_dir / "samples.png")


class ResultsCSV(Callback):
    """results.csv, rewritten whole (atomically) after every epoch."""

    order = 10

    def on_epoch_end(self, trainer: Trainer, end: EpochEnd) -> None:
        trainer.write_results()


class Checkpoint(Callback):
    """weights/last.ckpt: everything a resume needs, after every epoch."""

    order = 20

    def on_epoch_end(self, trainer: Trainer, end: EpochEnd) -> None:
        save_checkpoint(trainer.checkpoint_state(), trainer.weights_dir / "last.ckpt")


class HistoryPlot(Callback):
    """plots/loss.png and metrics.png: the curves so far."""

    order = 30

    def on_epoch_end(self, trainer: Trainer, end: EpochEnd) -> None:
        plot_history(trainer.history, trainer.plots_dir)


class TensorBoard(Callback):
    """The epoch's numbers as TensorBoard scalars in the run folder."""

    order = 40

    def __init__(self) -> None:
        self.writer = None

    def on_fit_start(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(trainer.run_dir))

    def on_epoch_end(self, trainer: Trainer, end: EpochEnd) -> None:
        for k, v in end.row.items():
            if k != "epoch" and isinstance(v, (int, float)):
                self.writer.add_scalar(k, v, end.epoch + 1)
        self.writer.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        self.writer.close()


class Progress(Callback):
    """A live bar on a terminal; without one (output to a file) plain lines every
    ``train.log_every`` %; one line per epoch either way."""

    order = 50
    main_only = False  # other ranks print to /dev/null (engine/distributed.py)

    def __init__(self) -> None:
        self.bar = None

    def on_train_epoch_start(self, trainer: Trainer, epoch: int, n_batches: int) -> None:
        from tqdm.auto import tqdm

        self.interactive = sys.stderr.isatty()
        log_every = trainer.settings.log_every
        self.log_every = max(1, round(n_batches * log_every / 100)) if log_every else 0
        self.n_batches, self.label = n_batches, f"epoch {epoch + 1}/{trainer.epochs_shown()}"
        self.bar = tqdm(
            total=n_batches,
            desc=self.label,
            leave=False,
            dynamic_ncols=True,
            disable=not self.interactive,
        )

    def on_train_batch_end(self, trainer: Trainer, index: int, stats: dict[str, str]) -> None:
        self.bar.set_postfix(stats)
        self.bar.update()
        done, n = index + 1, self.n_batches
        if not self.interactive and self.log_every and (done % self.log_every == 0 or done == n):
            shown = " ".join(f"{k}={v}" for k, v in stats.items())
            print(f"{self.label} {done}/{n} ({100 * done // n}%) {shown}", flush=True)

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        self.bar.close()

    def on_epoch_end(self, trainer: Trainer, end: EpochEnd) -> None:
        row = end.row
        # Train losses always (an epoch without validation still reports), then val metrics.
        shown = ", ".join(
            f"{k}={v:.4g}" for k, v in row.items() if k.startswith(("train/", "val/"))
        )
        print(
            f"epoch {end.epoch + 1}/{trainer.epochs_shown()}: {shown} ({row['time']:.1f}s, "
            f"{row['img_s']:.1f} img/s, data wait {100 * row['data_wait']:.1f}%)",
            flush=True,
        )


@CALLBACKS.register("early_stopping")
class EarlyStopping(Callback):
    """``train.patience``: stop when the metric has not improved for that many validations.

    Counted from ``trainer.history`` alone, so a resumed run stops where the uninterrupted one
    would have; every rank decides alike (they share the gathered metrics)."""

    order = 60
    main_only = False

    def __init__(self, patience: int | None = None) -> None:
        self.patience = patience

    def on_epoch_end(self, trainer: Trainer, end: EpochEnd) -> None:
        s = trainer.settings
        patience = self.patience if self.patience is not None else s.patience
        if not patience:
            return
        best, since = None, 0
        for row in trainer.history:
            value = row.get(s.metric)
            if value is None:
                continue  # not validated that epoch
            if s.improves(value, best):
                best, since = value, 0
            else:
                since += 1
        if since >= patience:
            trainer.stop(
                f"train.patience={patience}: {s.metric} has not improved for {since} "
                f"validations (best {best:.4g}); stopping after epoch {end.epoch + 1}"
            )


class CloseMosaic(Callback):
    """``data.aug.close_mosaic``: the last ``epochs`` epochs train on whole images, as
    Ultralytics' ``close_mosaic`` does, so the network ends on the images validation shows it.

    Switched at the start of the first such epoch (of the planned ones under ``train.time``):
    the train set's ``mosaic`` goes to 0 and its loader is rebuilt, since DataLoader workers
    hold their own copies of the dataset. A resumed run switches at its first epoch if due."""

    order = 5
    main_only = False  # every rank loads its own share

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_start(self, trainer: Trainer, epoch: int, n_batches: int) -> None:
        dataset = trainer.data.train
        left = trainer.epochs_left()
        if getattr(dataset, "mosaic", 0) <= 0 or left is None or left > self.epochs:
            return
        dataset.mosaic = 0.0
        trainer.train_loader = trainer.make_loader(dataset, train=True)
        if trainer.dist.active:  # the new sampler shuffles as the old one would this epoch
            trainer.dist.set_epoch(trainer.train_loader, epoch)
        epochs = "epoch" if left == 1 else f"{left} epochs"
        print(f"data.aug.close_mosaic={self.epochs}: mosaics off for the last {epochs}")


def build_callbacks(trainer: Trainer, extra: list[Callback]) -> list[Callback]:
    """The run's callbacks in order: the built-in ones its settings switch on, those named in
    ``train.callbacks`` (registered in CALLBACKS), then ``extra``."""
    s = trainer.settings
    chosen: list[Callback] = [BestWeights(), ResultsCSV(), Checkpoint(), Progress()]
    if s.plots:
        chosen += [ValidationPlots(), SamplesPlot(), HistoryPlot()]
    if s.tensorboard:
        chosen.append(TensorBoard())
    if s.patience and "early_stopping" not in s.callbacks:
        chosen.append(EarlyStopping())
    train_set = trainer.data.train
    if getattr(train_set, "mosaic", 0) > 0 and getattr(train_set, "close_mosaic", 0) > 0:
        chosen.append(CloseMosaic(train_set.close_mosaic))
    for name in s.callbacks:
        try:
            cls = CALLBACKS.get(name)
        except ConfigError as e:
            raise ConfigError(f"train.callbacks: {e}") from None
        try:
            chosen.append(cls())
        except TypeError as e:
            raise ConfigError(
                f"train.callbacks: {name!r} cannot be built without arguments ({e})"
            ) from None
    chosen += extra
    for cb in chosen:
        if not isinstance(cb, Callback):
            raise ConfigError(f"callback {cb!r} is not a visbricks.engine.callbacks.Callback")
    # sorted() is stable: equal orders keep the order above.
    return sorted(chosen, key=lambda cb: cb.order)
