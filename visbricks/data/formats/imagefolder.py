"""ImageFolder (torchvision's layout): ``[<split>/]<class>/*.jpg``; the folder name is the label."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ...registry import DATASETS
from ..classification import ClassificationSet, read_imagefolder
from .base import SPLITS, DatasetFormat, has_images


def _class_dirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]


def _is_class_root(folder: Path) -> bool:
    """Sub-folders holding images, and no images of its own (those would have no label)."""
    dirs = _class_dirs(folder)
    if not dirs or has_images(folder):
        return False
    return any(has_images(d, recursive=True) for d in dirs)


@DATASETS.register("imagefolder")
class ImageFolder(DatasetFormat):
    kind = "classification"
    looks_for = "<class>/*.jpg or <split>/<class>/*.jpg folders (ImageFolder)"
    priority = 80  # the most generic layout: anything more specific is asked first
    writable = True

    @classmethod
    def sniff(cls, path: Path) -> bool:
        if not path.is_dir():
            return False
        splits = [path / s for s in SPLITS if (path / s).is_dir()]
        if splits:
            return all(_is_class_root(s) for s in splits)
        return _is_class_root(path)

    def splits(self, path: str | Path) -> list[str | None]:
        path = Path(path)
        found: list[str | None] = [s for s in SPLITS if _is_class_root(path / s)]
        return found or [None]

    def read(
        self,
        path: str | Path,
        split: str | None = None,
        classes: list[str] | None = None,
        strict: bool = False,
    ) -> ClassificationSet:
        path = Path(path)
        if classes is None and split is not None and _is_class_root(path / "train"):
            # Every split gets the training split's class ids, even one missing a class.
            classes = read_imagefolder(path / "train").classes
        return read_imagefolder(path / split if split else path, classes, strict)

    def write(
        self, records: Any, out_dir: str | Path, split: str = "train", **options: Any
    ) -> Path:
        """Copy ``records`` (single-label) to ``out_dir/<split>/<class>/``; returns that folder."""
        out = Path(out_dir) / split
        for file, labels in zip(records.files, records.labels):
            dst = out / records.classes[labels[0]] / Path(file).name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(records.root / file, dst)
        return out
