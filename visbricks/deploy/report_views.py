"""Error views of the run report: which validation samples a model gets most wrong, drawn.

A view rides along the report's one pass over the split: the task's own ``eval_step`` feeds the
evaluator through a :class:`Tap`, which hands each batch's ``(predictions, targets)`` — exactly
what the evaluator scored — to the view. The view keeps the worst samples in a bounded
:class:`Worst` (a heap: memory and drawing stay at ``limit`` items however large the split) and
draws only those at the end, through ``data/draw.py``. Scores are ``metrics/errors.py``.

This file holds the shared parts and the classification views; ``report_boxes.py`` (locate,
detect) and ``report_dense.py`` (segment, depth, lanes) the others.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.draw import draw_caption
from ..data.io import read_image
from ..data.normalize import denormalize, to_image
from ..metrics.base import EvalResult
from ..metrics.errors import confused_pairs, multilabel_badness, sample_losses

LIMIT = 24  # gallery items per view: the report stays small and quick to write and to open


@dataclass
class Item:
    """One gallery entry: ``draw()`` renders its PNG (called only for kept items); ``record``
    is its prediction record (JSON); ``title`` its caption."""

    title: str
    record: dict[str, Any]
    draw: Callable[[], np.ndarray]


@dataclass
class Gallery:
    key: str  # file-name stem of its images and records
    title: str
    note: str  # what is drawn how, and how the items are sorted
    items: list[Item] = field(default_factory=list)


class Worst:
    """The ``k`` items of largest badness offered so far; ``make`` runs only for those kept, so
    a sample that cannot enter costs one comparison."""

    def __init__(self, k: int = LIMIT) -> None:
        self.k = k
        self._heap: list[tuple[float, int, Item]] = []
        self._order = itertools.count()

    def offer(self, badness: float, make: Callable[[], Item]) -> None:
        if self.k <= 0 or badness != badness:  # NaN: nothing to rank (no valid pixel, ...)
            return
        entry = (float(badness), -next(self._order), None)
        if len(self._heap) >= self.k and entry[:2] <= self._heap[0][:2]:
            return
        item = make()
        if len(self._heap) >= self.k:
            heapq.heapreplace(self._heap, (entry[0], entry[1], item))
        else:
            heapq.heappush(self._heap, (entry[0], entry[1], item))

    def items(self) -> list[Item]:
        """Worst first; equal badness in the order offered."""
        return [e[2] for e in sorted(self._heap, key=lambda e: (-e[0], -e[1]))]


class Tap:
    """Stands in for an evaluator inside ``task.eval_step``: forwards everything and passes each
    batch's ``(predictions, targets)`` on to ``sink``."""

    def __init__(self, evaluator: Any, sink: Callable[[Any, Any], None]) -> None:
        self.evaluator = evaluator
        self._sink = sink

    def add_losses(self, losses: Any, n: int) -> None:
        self.evaluator.add_losses(losses, n)

    def update(self, predictions: Any, targets: Any) -> None:
        self.evaluator.update(predictions, targets)
        self._sink(predictions, targets)


class ErrorView:
    """One task's error view: ``step`` per batch (metrics and collection), ``galleries`` at the
    end (with the evaluator's result, for views that rank by its split-level details)."""

    def __init__(self, task: Any, dataset: Any, limit: int = LIMIT) -> None:
        self.task, self.dataset, self.limit = task, dataset, limit
        self.seen = 0  # samples before the current batch: the dataset index of its first

    def step(self, model: torch.nn.Module, batch: dict, evaluator: Any) -> None:
        taken: list[tuple[Any, Any]] = []
        self.task.eval_step(model, batch, Tap(evaluator, lambda p, t: taken.append((p, t))))
        for predictions, targets in taken:
            self.collect(batch, predictions, targets, self.seen)
        self.seen += self.task.batch_size(batch)

    def collect(self, batch: dict, predictions: Any, targets: Any, start: int) -> None:
        raise NotImplementedError

    def galleries(self, result: EvalResult) -> list[Gallery]:
        raise NotImplementedError


# --------------------------------------------------------------------------- drawing helpers
def fit(image: np.ndarray, small: int = 160, large: int = 384) -> tuple[np.ndarray, float]:
    """``image`` enlarged pixel for pixel to at least ``small`` px on its long side (tiny
    inputs stay readable) or shrunk to ``large``; returns it and the scale applied."""
    h, w = image.shape[:2]
    k = max(1, small // max(h, w, 1))
    if k > 1:
        return np.ascontiguousarray(image.repeat(k, 0).repeat(k, 1)), float(k)
    if max(h, w) > large:
        s = large / max(h, w)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR)), s
    return image, 1.0


def side_by_side(panels: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Panels of one height (the first's) left to right on white."""
    h = panels[0].shape[0]
    out = []
    for i, p in enumerate(panels):
        if p.shape[0] != h:
            w = max(1, round(p.shape[1] * h / p.shape[0]))
            p = np.asarray(Image.fromarray(p).resize((w, h), Image.NEAREST))
        out.append(p)
        if i < len(panels) - 1:
            out.append(np.full((h, gap, 3), 255, np.uint8))
    return np.concatenate(out, axis=1)


def network_image(task: Any, tensor: torch.Tensor) -> np.ndarray:
    """A normalised input tensor back to the RGB image the network saw."""
    return to_image(denormalize(tensor.detach().cpu(), task.mean, task.std))


def source_file(dataset: Any, index: int) -> Path | None:
    """The image file behind sample ``index`` of a classification dataset, when it has one."""
    files = getattr(dataset, "files", None)
    return Path(files[index]) if files is not None and index < len(files) else None


# --------------------------------------------------------------------------- classification
class ClassifyView(ErrorView):
    """Top losses (cross-entropy, highest first) and the most-confused class pairs (by count in
    the confusion matrix), each with an image."""

    def __init__(self, task: Any, dataset: Any, limit: int = LIMIT) -> None:
        super().__init__(task, dataset, limit)
        self.classes = list(task.classes)
        self.top = Worst(limit)
        self.pair_examples: dict[tuple[int, int], tuple[float, dict, Callable]] = {}

    def collect(self, batch: dict, predictions: Any, targets: Any, start: int) -> None:
        logits, labels = predictions.detach().float().cpu(), targets.detach().long().cpu()
        losses = sample_losses(logits, labels)
        probs = logits.softmax(1)
        for j in range(len(labels)):
            index, true, pred = start + j, int(labels[j]), int(probs[j].argmax())
            record = self._record(index, true, probs[j], float(losses[j]))
            draw = self._drawer(batch["image"][j], index, record)
            self.top.offer(float(losses[j]), lambda r=record, d=draw: self._item(r, d))
            if pred != true:  # the most confident example of each mistake
                conf = float(probs[j, pred])
                best = self.pair_examples.get((true, pred))
                if best is None or conf > best[0]:
                    self.pair_examples[(true, pred)] = (conf, record, draw)

    def _record(self, index: int, true: int, probs: torch.Tensor, loss: float) -> dict:
        k = min(3, len(self.classes))
        top = probs.topk(k)
        file = source_file(self.dataset, index)
        return {
            "index": index,
            "file": str(file) if file else None,
            "true": self.classes[true],
            "predicted": self.classes[int(top.indices[0])],
            "loss": round(loss, 5),
            "top": [
                {"label": self.classes[int(i)], "score": round(float(s), 5)}
                for s, i in zip(top.values, top.indices)
            ],
        }

    def _drawer(self, tensor: torch.Tensor, index: int, record: dict) -> Callable[[], np.ndarray]:
        file = source_file(self.dataset, index)
        # Without a file, the input as the network saw it (copied: the batch is gone by then).
        seen = tensor.detach().cpu().clone() if file is None else None

        def draw() -> np.ndarray:
            image = read_image(file) if file is not None else network_image(self.task, seen)
            image, _ = fit(image, 192)
            top = record["top"][0]
            text = f"{top['label']} {top['score']:.2f}\ntrue: {record['true']}"
            return draw_caption(image, text)

        return draw

    def _item(self, record: dict, draw: Callable[[], np.ndarray]) -> Item:
        title = f"loss {record['loss']:.3f}: {record['predicted']} (true {record['true']})"
        return Item(title, record, draw)

    def galleries(self, result: EvalResult) -> list[Gallery]:
        pairs = []
        matrix = result.details.get("confusion_matrix")
        for true, pred, count in confused_pairs(matrix, self.limit) if matrix is not None else []:
            example = self.pair_examples.get((true, pred))
            if example is None:
                continue
            record = {**example[1], "pair_count": count}
            title = f"{self.classes[true]} → {self.classes[pred]}: {count}×"
            pairs.append(Item(title, record, example[2]))
        return [
            Gallery(
                "top-losses",
                "Top losses",
                "Validation images with the highest cross-entropy, highest first; caption: "
                "predicted class and probability, true class.",
                self.top.items(),
            ),
            Gallery(
                "confused-pairs",
                "Most-confused pairs",
                "True → predicted class pairs by how often the model made that mistake (the "
                "confusion matrix), each with its most confident example.",
                pairs,
            ),
        ]


class MultiLabelView(ErrorView):
    """Per class (lowest AP first): the images whose score is furthest from the truth."""

    def __init__(self, task: Any, dataset: Any, limit: int = LIMIT) -> None:
        super().__init__(task, dataset, limit)
        self.classes = list(task.classes)
        n = min(len(self.classes), limit)
        self.per_class = max(1, limit // max(n, 1))
        self.worst = [Worst(self.per_class) for _ in self.classes]

    def collect(self, batch: dict, predictions: Any, targets: Any, start: int) -> None:
        scores = predictions.detach().float().cpu().numpy()
        truth = targets.detach().float().cpu().numpy()
        bad = multilabel_badness(scores, truth)
        for j in range(len(scores)):
            index = start + j
            file = source_file(self.dataset, index)
            record = {
                "index": index,
                "file": str(file) if file else None,
                "true": [c for c, t in zip(self.classes, truth[j]) if t > 0.5],
                "scores": {c: round(float(s), 5) for c, s in zip(self.classes, scores[j])},
            }
            seen = batch["image"][j].detach().cpu().clone() if file is None else None
            for c in range(len(self.classes)):
                self.worst[c].offer(
                    float(bad[j, c]), lambda c=c, r=record, s=seen, f=file: self._item(c, r, s, f)
                )

    def _item(self, c: int, record: dict, seen: torch.Tensor | None, file: Path | None) -> Item:
        name = self.classes[c]
        truth = name in record["true"]
        score = record["scores"][name]

        def draw() -> np.ndarray:
            image = read_image(file) if file is not None else network_image(self.task, seen)
            image, _ = fit(image, 192)
            shown = " ".join(record["true"]) or "-"
            state = "present" if truth else "absent"
            return draw_caption(image, f"{name}: {score:.2f} ({state})\ntrue: {shown}")

        kind = "present" if truth else "absent"
        return Item(f"{name} {score:.2f} ({kind})", {**record, "class": name}, draw)

    def galleries(self, result: EvalResult) -> list[Gallery]:
        ap = result.details.get("per_class_ap", {})

        def lowest_ap_first(c: int) -> tuple[bool, float]:
            value = ap.get(self.classes[c], float("nan"))
            return (value != value, value if value == value else 0.0)  # n/a (NaN) last

        order = sorted(range(len(self.classes)), key=lowest_ap_first)
        out = []
        for c in order[: self.limit]:
            name = self.classes[c]
            value = ap.get(name, float("nan"))
            shown = "n/a" if value != value else f"{value:.3f}"
            out.append(
                Gallery(
                    f"class-{c}",
                    f"{name}: AP {shown}",
                    f"The {self.per_class} images whose {name} score is furthest from the "
                    "truth (a present class scored low, an absent one high), worst first.",
                    self.worst[c].items(),
                )
            )
        return out
