"""The evaluator interface every task's metrics implement, and the typed result they return.

An :class:`Evaluator` accumulates over a split (``reset`` → ``update`` per batch → ``compute``)
and knows nothing of models or loaders: the task turns model outputs into ``predictions`` and
the batch into ``targets`` (whatever that task's evaluator documents) and feeds them in.
``compute`` returns an :class:`EvalResult`: the flat numbers ``results.csv`` logs, the printed
table, the task-specific details as typed fields, and the figures/files it can write.

Metric keys carry the split as a prefix (``val/mIoU``, ``test/mIoU``), chosen when the
evaluator is built, so ``visbricks eval --split test`` labels its numbers "test".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# A writer of one output file: called with the path to write (see EvalResult.plots).
FileWriter = Callable[[Path], None]


@dataclass
class EvalResult:
    """What an evaluation produced.

    ``metrics``: flat ``{"val/mIoU": 0.71, ...}`` floats (what results.csv and best.yaml log).
    ``table``: the human-readable report ``visbricks eval`` and ``demo`` print.
    ``details``: task-specific structured results (per-class arrays, a VOCResult, the COCO stats
    …); each evaluator documents its keys.
    ``files``: output file name → writer (confusion_matrix.png, pr_curve.png,
    coco_results.json, depth.png …); :meth:`plots` writes them.
    ``info``: how the numbers were computed, as text (``{"val/resolution": "original"}``):
    saved beside the metrics in metrics.json, kept out of ``metrics`` so that stays numbers only
    (results.csv, best.yaml and the printed list format every entry as a float).
    """

    metrics: dict[str, float]
    table: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    files: dict[str, FileWriter] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)

    def plots(self, out_dir: str | Path) -> list[Path]:
        """Write every figure and file of this result into ``out_dir``; returns their paths."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name, write in self.files.items():
            path = out_dir / name
            write(path)
            written.append(path)
        return written

    def save(self, out_dir: str | Path, name: str = "metrics.json") -> Path:
        """``metrics`` and ``info`` as one JSON object in ``out_dir`` (atomic) plus everything
        :meth:`plots` writes."""
        from ..files import atomic_write_text

        self.plots(out_dir)
        path = Path(out_dir) / name
        atomic_write_text(path, json.dumps({**self.metrics, **self.info}, indent=1))
        return path

    def __getitem__(self, key: str) -> float:
        # result["val/mAP50"] reads a metric, as the dict evaluate() used to return did.
        return self.metrics[key]


class Evaluator:
    """Accumulates one split's predictions and targets, then computes an :class:`EvalResult`.

    Subclasses implement :meth:`reset` (calling ``super().reset()``), :meth:`update` and
    :meth:`compute`. The base keeps the running mean of the task's loss terms
    (:meth:`add_losses`), so every task reports ``val/loss`` the same way, and the split prefix.
    """

    def __init__(self, prefix: str = "val") -> None:
        self.prefix = prefix
        self.reset()

    def reset(self) -> None:
        self._loss_sums: dict[str, float] = {}
        self._loss_count = 0

    def add_losses(self, losses: Mapping[str, Any], n: int) -> None:
        """Add a batch's scalar loss terms (means over its ``n`` samples) to the running mean."""
        for k, v in losses.items():
            if isinstance(v, torch.Tensor):
                if v.ndim != 0:
                    continue
                v = v.item()
            if k == "num_pos":  # a count, not a loss term
                continue
            self._loss_sums[k] = self._loss_sums.get(k, 0.0) + float(v) * n
        self._loss_count += n

    def loss_metrics(self) -> dict[str, float]:
        """``{"val/loss": ..., "val/loss_box": ...}``: the mean of each term added so far."""
        n = max(self._loss_count, 1)
        return {self.key(k): v / n for k, v in self._loss_sums.items()}

    def key(self, name: str) -> str:
        """The logged name of metric ``name``: ``val/name`` (``test/name`` on the test split)."""
        return f"{self.prefix}/{name}"

    def update(self, predictions: Any, targets: Any) -> None:
        raise NotImplementedError

    def compute(self) -> EvalResult:
        raise NotImplementedError


def fmt(value: float, digits: int = 4) -> str:
    """A table cell: ``n/a`` for NaN (a class without ground truth), else fixed digits."""
    return "n/a" if value != value else f"{value:.{digits}f}"





class LossEvaluator(Evaluator):
    """The task's own loss terms on a split, nothing else: validation where the split has no
    ground truth for the metrics (self-supervised depth on a user's video)."""

    def update(self, predictions: Any, targets: Any) -> None:
        pass  # the loss terms arrive through add_losses

    def compute(self) -> EvalResult:
        metrics = self.loss_metrics()
        table = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        return EvalResult(metrics, f"{table}  (no ground truth in this split: losses only)")
__all__ = ["EvalResult", "Evaluator", "FileWriter", "LossEvaluator", "fmt"]
