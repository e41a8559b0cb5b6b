"""fastai-style multi-label CSV: ``filename,labels`` with space-separated labels per image."""

from __future__ import annotations

import csv
from pathlib import Path

from ...registry import DATASETS
from ..classification import ClassificationSet, read_csv_set
from .base import SPLITS, DatasetFormat


def _is_label_csv(path: Path) -> bool:
    if not (path.is_file() and path.suffix.lower() == ".csv"):
        return False
    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError):
        return False
    return header is not None and [h.strip().lower() for h in header[:2]] == ["filename", "labels"]


@DATASETS.register("csv")
class LabelCSV(DatasetFormat):
    kind = "classification"
    looks_for = "a CSV with header 'filename,labels' (or <split>.csv files in the folder)"
    priority = 70

    @classmethod
    def sniff(cls, path: Path) -> bool:
        if path.is_dir():
            return any(_is_label_csv(p) for p in path.glob("*.csv"))
        return _is_label_csv(path)

    def splits(self, path: str | Path) -> list[str | None]:
        path = Path(path)
        found: list[str | None] = [s for s in SPLITS if (path / f"{s}.csv").is_file()]
        return found if path.is_dir() and found else [None]

    def _csv(self, path: Path, split: str | None) -> Path:
        if path.is_file():
            return path
        if split is not None and split.endswith(".csv"):  # a CSV path, as configs give it
            return path / split
        if split is not None:
            return path / f"{split}.csv"
        found = [p for p in sorted(path.glob("*.csv")) if _is_label_csv(p)]
        return found[0] if len(found) == 1 else path / "train.csv"

    def read(
        self,
        path: str | Path,
        split: str | None = None,
        classes: list[str] | None = None,
        strict: bool = False,
    ) -> ClassificationSet:
        path = Path(path)
        if classes is None and path.is_dir() and split not in (None, "train"):
            if (path / "train.csv").is_file():  # every split uses the training split's ids
                classes = read_csv_set(path / "train.csv").classes
        return read_csv_set(self._csv(path, split), classes)
