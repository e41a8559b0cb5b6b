"""Image-level labels: ImageFolder (one class per image) and fastai-style CSV (multi-label).

Every file is decoded once when the dataset is built: a corrupt image is found before training
starts — warned, skipped and counted, or an error with ``strict=True`` — instead of killing a
DataLoader worker an hour in. With ``cache=True`` the decoded pixels are kept.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ..errors import DataError
from .io import DecodeCache, is_image_file, read_image, safe_join, warn_skipped


@dataclass
class ClassificationSet:
    """Image-level labels as read from a folder or CSV, before any pixel is decoded.

    Single-label formats (ImageFolder) give one index per image; multi-label (CSV) any number.
    This is what the ``imagefolder`` and ``csv`` formats read and write.
    """

    root: Path  # folder the ``files`` are relative to
    classes: list[str]
    files: list[str]  # POSIX paths relative to root
    labels: list[list[int]]  # class indices per file
    multilabel: bool = False
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def __len__(self) -> int:
        return len(self.files)

    def dataset(self, **kwargs) -> LabelledImages:
        """The decoded, trainable dataset (``transform``, ``strict``, ``cache`` as keywords)."""
        if not self.files:
            raise DataError(f"dataset is empty: no images under {self.root}")
        targets = self.labels if self.multilabel else [t[0] for t in self.labels]
        files = [self.root / f for f in self.files]
        return LabelledImages(files, targets, self.classes, multilabel=self.multilabel, **kwargs)


def read_imagefolder(
    folder: str | Path, classes: list[str] | None = None, strict: bool = False
) -> ClassificationSet:
    """``folder/<class>/*.jpg`` (any depth below the class folder) as a ClassificationSet; an
    empty class folder is warned and left out, an error with ``strict``."""
    folder = Path(folder)
    found = imagefolder_classes(folder, strict)
    classes = list(classes or found)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{folder}: class folders {unknown} are not in the class list {classes}")
    files, labels = [], []
    for idx, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue  # a class absent from this split
        for f in sorted(class_dir.rglob("*")):
            if is_image_file(f):
                files.append(f.relative_to(folder).as_posix())
                labels.append([idx])
    return ClassificationSet(folder, classes, files, labels)


def read_csv_set(csv_path: str | Path, classes: list[str] | None = None) -> ClassificationSet:
    """A fastai-style ``filename,labels`` CSV (files relative to its folder)."""
    csv_path = Path(csv_path)
    rows = read_label_csv(csv_path)
    classes = list(classes or csv_classes(csv_path))
    index = {c: i for i, c in enumerate(classes)}
    files, labels = [], []
    for name, row_labels in rows:
        unknown = [label for label in row_labels if label not in index]
        if unknown:
            raise DataError(f"{csv_path}: {name} has labels {unknown} not in the class list")
        safe_join(csv_path.parent, name)  # refuses a path leaving the dataset folder
        files.append(name)
        labels.append([index[label] for label in row_labels])
    return ClassificationSet(csv_path.parent, classes, files, labels, multilabel=True)


def imagefolder_classes(folder: str | Path, strict: bool = False) -> list[str]:
    """Class names: the sub-folders of ``folder`` that hold images. An empty class folder is
    not a class (a head output nothing can teach): warned and left out, an error if ``strict``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"dataset folder not found: {folder}")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    empty = [c for c in found if not any(is_image_file(f) for f in (folder / c).rglob("*"))]
    if empty and strict:
        raise DataError(f"{folder / empty[0]}: class folder has no images (data.strict=true)")
    warn_skipped(
        [(str(folder / c), "class folder has no images") for c in empty],
        f"empty class folder(s) of {len(found)}, not classes",
    )
    classes = [c for c in found if c not in empty]
    if not classes:
        raise DataError(
            f"{folder}: no class sub-folders (ImageFolder layout is <split>/<class>/*.jpg)"
        )
    return classes


def read_label_csv(path: str | Path) -> list[tuple[str, list[str]]]:
    """``filename,labels`` rows with space-separated labels (fastai's multi-label CSV)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"label CSV not found: {path}")
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not UTF-8 text (byte {e.start} is {e.object[e.start:e.start + 1]!r}); "
            "save the CSV as UTF-8"
        ) from None
    except OSError as e:
        raise DataError(f"cannot read label CSV {path}: {e.strerror or e}") from None
    if "\0" in text:
        raise DataError(f"{path}: contains NUL bytes; not a text CSV")
    with io.StringIO(text, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:2]] != ["filename", "labels"]:
            raise DataError(f"{path}: the first line must be the header 'filename,labels'")
        rows = []
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < 2:
                raise DataError(f"{path}:{line_no}: expected 'filename,labels', got {row}")
            rows.append((row[0].strip(), row[1].split()))
    return rows


def csv_classes(path: str | Path) -> list[str]:
    return sorted({label for _, labels in read_label_csv(path) for label in labels})


class LabelledImages(Dataset):
    """Images with a class index (``label``) or a multi-hot vector (``labels``)."""

    def __init__(
        self,
        files: Sequence[Path],
        targets: Sequence[int | list[int]],
        classes: list[str],
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        multilabel: bool = False,
        strict: bool = False,
        cache: bool | int = False,
    ) -> None:
        if not files:
            raise DataError("dataset is empty: no images found")
        self.classes = classes
        self.transform = transform
        self.multilabel = multilabel
        self.skipped: list[tuple[str, str]] = []
        self.files: list[Path] = []
        self.targets: list = []
        self._cache = DecodeCache(cache)  # filled here, up to its byte budget
        for file, target in zip(files, targets):
            try:
                pixels = read_image(file)
            except DataError as e:
                if strict:
                    raise
                self.skipped.append((str(file), str(e)))
                continue
            self._cache.put(len(self.files), pixels)
            self.files.append(Path(file))
            self.targets.append(target)
        warn_skipped(self.skipped, f"unreadable image(s) of {len(files)}", stacklevel=2)
        if not self.files:
            raise DataError("dataset is empty: every image was unreadable")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        pixels = self._cache.get(index, lambda: read_image(self.files[index]))
        image = torch.from_numpy(pixels).permute(2, 0, 1)  # HWC uint8 → CHW, as v2 expects
        if self.transform is not None:
            image = self.transform(image)
        sample = {"image": image, "index": index}
        if self.multilabel:
            target = torch.zeros(len(self.classes))
            target[self.targets[index]] = 1.0
            sample["labels"] = target
        else:
            sample["label"] = self.targets[index]
        return sample


def imagefolder_dataset(
    folder: str | Path, classes: list[str] | None = None, **kwargs
) -> LabelledImages:
    """``folder/<class>/*.jpg`` decoded (``transform``, ``strict``, ``cache`` as keywords)."""
    return read_imagefolder(folder, classes, kwargs.get("strict", False)).dataset(**kwargs)


def csv_dataset(csv_path: str | Path, classes: list[str] | None = None, **kwargs) -> LabelledImages:
    """A ``filename,labels`` CSV decoded (multi-label; keywords as :func:`imagefolder_dataset`)."""
    return read_csv_set(csv_path, classes).dataset(**kwargs)


class _RandomResizedCrop(v2.RandomResizedCrop):
    """torchvision's, with a crop of at least one pixel. When ten draws miss, its centre-crop
    fallback takes the image's width over the largest ratio (or its height times the smallest):
    a ratio range the image cannot meet (data.aug.ratio=[1e6, 1e6] on a 64-pixel image) rounds
    that side to 0, and the resize of the empty crop failed."""

    def make_params(self, flat_inputs: list) -> dict:
        params = super().make_params(flat_inputs)
        height, width = v2.query_size(flat_inputs)
        if params["height"] < 1:
            params["height"], params["top"] = 1, (height - 1) // 2
        if params["width"] < 1:
            params["width"], params["left"] = 1, (width - 1) // 2
        return params


def classification_transforms(
    img_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    train: bool,
    aug: dict,
) -> v2.Compose:
    """uint8 CHW → normalized float CHW of ``img_size`` (height, width)."""
    steps: list = []
    if train:
        steps.append(
            _RandomResizedCrop(img_size, scale=tuple(aug["scale"]), ratio=tuple(aug["ratio"]))
        )
        if aug["hflip"] > 0:
            steps.append(v2.RandomHorizontalFlip(aug["hflip"]))
        if aug["vflip"] > 0:
            steps.append(v2.RandomVerticalFlip(aug["vflip"]))
        if aug["rotate"] > 0:
            steps.append(v2.RandomRotation(aug["rotate"]))
        if aug["color_jitter"] > 0:
            j = aug["color_jitter"]
            steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
    else:
        h, w = img_size
        ratio = aug["crop_ratio"]
        # Square outputs resize the short side (aspect kept, as torchvision's references do).
        resize = round(h / ratio) if h == w else (round(h / ratio), round(w / ratio))
        steps += [v2.Resize(resize), v2.CenterCrop(img_size)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)
