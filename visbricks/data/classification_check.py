"""``visbricks data check`` for image-label datasets (ImageFolder, label CSV): images per class
and split, every image decoded, classes missing from a split, images filed in two splits.

The box check (``data/check.py``) dispatches here by the detected format's kind; the numbers are
what training would see: splits as the format lists them (``train``/``val``/``test`` folders or
CSVs, or one undivided set), class ids from the training split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .classification import ClassificationSet
from .formats import find_format
from .io import check_image
from .report import ProblemList


@dataclass
class ClassificationReport(ProblemList):
    source: Path
    dataset_format: str
    classes: list[str]
    images_per_class: dict[str, dict[str, int]] = field(default_factory=dict)  # split → class
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (split, file, reason)
    multilabel: bool = False
    # Files in an image folder that training ignores (not an image suffix): listed, not wrong.
    notes: list[tuple[str, str, str]] = field(default_factory=list)

    def format(self) -> str:
        """The human-readable report the CLI prints."""
        n = len(self.classes)
        kind = "multi-label" if self.multilabel else "one label per image"
        lines = [f"{self.source}  ({self.dataset_format}, {n} class{'es' * (n != 1)}, {kind})", ""]
        splits = list(self.images_per_class)
        width = max([len("class"), *(len(c) for c in self.classes)]) + 2
        lines.append(f"{'class':<{width}}" + "".join(f"{s:>10}" for s in splits))
        for c in self.classes:
            cells = (self.images_per_class[s].get(c, 0) for s in splits)
            lines.append(f"{c:<{width}}" + "".join(f"{cell:>10}" for cell in cells))
        totals = (self.images_per_class[s].get("", 0) for s in splits)
        lines.append(f"{'images':<{width}}" + "".join(f"{t:>10}" for t in totals))
        for s in splits:
            counts = [self.images_per_class[s].get(c, 0) for c in self.classes]
            if counts and min(counts) > 0:
                ratio = max(counts) / min(counts)
                lines.append(f"{s}: class imbalance (largest / smallest) {ratio:.2f}")
        lines.append("")
        if self.notes:
            lines.append(f"{len(self.notes)} file(s) training ignores (not an image suffix):")
            lines += [f"  [{split}] {file}: {reason}" for split, file, reason in self.notes]
        return "\n".join(lines + self.problem_lines())


def check_classification_dataset(path: str | Path, strict: bool = False) -> ClassificationReport:
    """Read every split at ``path`` and decode every image; ``strict`` raises a DataError naming
    the file at the first problem."""
    path = Path(path)
    reader = find_format(path, "classification")
    names = reader.splits(path)
    train_name = "train" if "train" in names else names[0]
    first: ClassificationSet = reader.read(path, split=train_name)
    report = ClassificationReport(
        path, reader.name, list(first.classes), multilabel=first.multilabel
    )
    seen: dict[str, tuple[str, str]] = {}  # content hash → (split, file): one image, two splits

    def problem(split: str, file: str, reason: str) -> None:
        if strict:
            raise DataError(f"{file}: {reason}")
        report.problems.append((split, file, reason))

    for name in names:
        split = name or "all"
        ds = first if name == train_name else reader.read(path, split=name, classes=first.classes)
        counts = {c: 0 for c in report.classes}
        counts[""] = len(ds.files)
        for file, labels in zip(ds.files, ds.labels):
            for i in labels:
                counts[report.classes[i]] += 1
            full = ds.root / file
            reason = check_image(full)
            if reason is not None:
                problem(split, str(full), reason)
                continue
            digest = hashlib.sha256(full.read_bytes()).hexdigest()
            other = seen.setdefault(digest, (split, str(full)))
            if other[0] != split:
                problem(split, str(full), f"the same image is in {other[0]}: {other[1]}")
        if not first.multilabel:  # an ImageFolder split: what in it is not read as an image
            listed = {ds.root / f for f in ds.files}
            for f in sorted(ds.root.rglob("*")):
                if f.is_file() and f not in listed and not f.name.startswith("."):
                    report.notes.append((split, str(f), "not read as an image"))
        for c in report.classes:
            if counts[c] == 0 and name is not None:
                problem(split, str(ds.root), f"class {c!r} has no images in {split}")
        report.images_per_class[split] = counts
    return report
