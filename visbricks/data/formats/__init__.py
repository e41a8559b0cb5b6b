"""Detection dataset formats: VOC XML, COCO JSON, YOLO txt, and the data YAML naming them.

Every format is read into, and written from, :class:`~visbricks.data.records.DetectionSet`, so
converting is read-one-write-another. A written dataset is self-contained (images copied or
linked, ``classes.txt``, and a ``data.yaml`` describing every split written so far).
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import yaml

from ...errors import ConfigError, DataError
from ..records import DetectionSet
from .coco import read_coco, write_coco
from .datayaml import FORMATS, SPLITS, DataSpec, load_data_yaml, read_split
from .voc import ANNOTATION_DIRS, read_voc, write_voc
from .yolo import read_yolo, write_yolo

__all__ = [
    "FORMATS",
    "DataSpec",
    "convert",
    "dataset_splits",
    "detect_format",
    "load_data_yaml",
    "read_coco",
    "read_dataset",
    "read_split",
    "read_voc",
    "read_yolo",
    "write_coco",
    "write_dataset",
    "write_voc",
    "write_yolo",
]

log = logging.getLogger(__name__)
_WRITERS = {"voc": write_voc, "coco": write_coco, "yolo": write_yolo}
_YAML_SUFFIXES = (".yaml", ".yml")


def detect_format(path: str | Path) -> str:
    """``yaml``, ``coco``, ``voc`` or ``yolo`` for a data YAML, COCO JSON or dataset folder."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() in _YAML_SUFFIXES:
            return "yaml"
        if path.suffix.lower() == ".json":
            return "coco"
        raise DataError(f"{path}: expected a data YAML, a COCO .json or a dataset folder")
    if not path.is_dir():
        raise DataError(f"dataset not found: {path}")
    if (path / "data.yaml").is_file():
        return "yaml"
    if any((path / d).is_dir() and any((path / d).glob("*.xml")) for d in ANNOTATION_DIRS):
        return "voc"
    if (path / "labels").is_dir():
        return "yolo"
    raise DataError(
        f"cannot tell the format of {path}: expected data.yaml, Annotations/*.xml (VOC) or "
        "labels/ (YOLO); for COCO give the annotation .json file"
    )


def dataset_splits(path: str | Path, fmt: str | None = None) -> list[str | None]:
    """Split names present at ``path``; ``[None]`` when it is one undivided set."""
    path = Path(path)
    kind = fmt or detect_format(path)
    if kind == "yaml":
        return list(load_data_yaml(_yaml_file(path)).split_names())
    if kind == "voc":
        main = path / "ImageSets" / "Main"
        found: list[str | None] = [s for s in SPLITS if (main / f"{s}.txt").is_file()]
        return found or [None]
    if kind == "yolo":
        found = [s for s in SPLITS if (path / "images" / s).is_dir()]
        return found or [None]
    return [None]


def read_dataset(
    path: str | Path,
    fmt: str | None = None,
    split: str | None = None,
    classes: list[str] | None = None,
    strict: bool = False,
) -> DetectionSet:
    """Read a data YAML, COCO JSON, VOC root or YOLO root (``fmt`` inferred when None).

    ``split`` names a split (a YAML's default is ``train``); for a VOC/YOLO root, None reads
    every annotation/image. ``classes`` overrides the class list and its order.
    """
    path = Path(path)
    kind = fmt or detect_format(path)
    _check_choice(kind, (*FORMATS, "yaml"), "dataset format")
    if kind == "yaml":
        spec = load_data_yaml(_yaml_file(path))
        if classes is not None:
            spec.classes = list(classes)
        return read_split(spec, split or "train", strict=strict)
    if kind == "coco":
        return read_coco(path, classes=classes, strict=strict)
    if kind == "voc":
        image_set = f"ImageSets/Main/{split}.txt" if split else None
        return read_voc(path, image_set=image_set, classes=classes, strict=strict)
    image_dirs = [f"images/{split}"] if split else None
    return read_yolo(path, image_dirs=image_dirs, classes=classes, strict=strict)


def write_dataset(
    ds: DetectionSet,
    out_dir: str | Path,
    fmt: str,
    split: str = "train",
    copy_images: bool = True,
) -> Path:
    """Write ``ds`` as ``split`` of a ``fmt`` dataset in ``out_dir``; returns its ``data.yaml``.

    Call once per split into the same folder: ``data.yaml`` accumulates the splits, and must
    agree on format and classes. ``copy_images=False`` hard-links instead of copying.
    """
    _check_choice(fmt, FORMATS, "output format")
    _check_choice(split, SPLITS, "split")  # the data YAML knows only these, and they name folders
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    yaml_path = out / "data.yaml"
    existing = _existing_yaml(yaml_path, fmt, ds.classes)
    entries = _WRITERS[fmt](ds, out, split=split, copy_images=copy_images)
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in ds.classes), encoding="utf-8")
    written = {s: existing[s] for s in existing if s in SPLITS} | entries
    doc: dict[str, Any] = {"format": fmt, "root": ".", "classes": list(ds.classes)}
    doc |= {s: written[s] for s in sorted(written, key=_split_order)}
    yaml_path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), "utf-8")
    return yaml_path


def convert(src: str | Path, out_dir: str | Path, to: str, copy_images: bool = True) -> Path:
    """Convert every split of ``src`` (anything read_dataset takes) to ``to``; returns data.yaml.

    Samples the reader had to skip or repair are logged as warnings, one per problem.
    """
    _check_choice(to, FORMATS, "output format")
    yaml_path = Path(out_dir) / "data.yaml"
    for split in dataset_splits(src):
        ds = read_dataset(src, split=split)
        for file, reason in ds.problems:
            log.warning("%s: %s", file, reason)
        yaml_path = write_dataset(ds, out_dir, to, split=split or "train", copy_images=copy_images)
    return yaml_path


def _yaml_file(path: Path) -> Path:
    return path / "data.yaml" if path.is_dir() else path


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown {what} {value!r}{hint} (one of {', '.join(choices)})")


def _existing_yaml(path: Path, fmt: str, classes: list[str]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise DataError(f"cannot merge into {path}: {e}") from None
    if doc.get("format") != fmt or doc.get("classes") != list(classes):
        raise DataError(
            f"cannot add a split to {path}: it holds a {doc.get('format')} dataset with classes "
            f"{doc.get('classes')}, not {fmt} with {list(classes)}; use another output folder"
        )
    return doc


def _split_order(name: str) -> tuple[int, str]:
    return (SPLITS.index(name) if name in SPLITS else len(SPLITS), name)
