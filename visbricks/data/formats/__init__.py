"""Dataset formats as plugins: one :class:`~.base.DatasetFormat` class per layout, registered in
``DATASETS`` (VOC, COCO, YOLO, ImageFolder, CSV, masks, sequences, ...).

Every module in this package is imported here, so a new format is one new file with one
``@DATASETS.register`` line. :func:`find_format` auto-detects a folder or data YAML;
:func:`read_dataset`, :func:`write_dataset` and :func:`convert` (what ``data convert`` runs),
``data check`` and the tasks all dispatch through the registry. Box formats are read into, and
written from, :class:`~visbricks.data.records.DetectionSet`, so converting is
read-one-write-another.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from pathlib import Path
from typing import Any

from ...errors import ConfigError, DataError
from ..classification import ClassificationSet
from ..records import DetectionSet
from ._common import ProblemLog
from .base import (
    KINDS,
    SPLITS,
    DatasetFormat,
    data_yaml_of,
    find_format,
    format_names,
    get_format,
)
from .datayaml import DataSpec, DetectionFormat, holdout, load_data_yaml, read_split

# Import every format module so its classes register (a new format needs no edit here).
for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

from .coco import read_coco, write_coco  # noqa: E402  (re-exported for scripts and tests)
from .voc import read_voc, write_voc  # noqa: E402
from .yolo import read_yolo, write_yolo  # noqa: E402

# The box formats ``data convert --to`` can write (kept as a tuple for callers that list them).
FORMATS = tuple(format_names("detection", writable=True))

__all__ = [
    "FORMATS",
    "KINDS",
    "SPLITS",
    "ClassificationSet",
    "DataSpec",
    "DatasetFormat",
    "DetectionFormat",
    "ProblemLog",
    "convert",
    "data_yaml_of",
    "dataset_splits",
    "detect_format",
    "find_format",
    "format_names",
    "get_format",
    "load_data_yaml",
    "read_coco",
    "read_dataset",
    "read_split",
    "read_task_split",
    "read_voc",
    "read_yolo",
    "write_coco",
    "write_dataset",
    "write_voc",
    "write_yolo",
]

log = logging.getLogger(__name__)


def _resolve(path: Path, fmt: str | None, kind: str | None) -> DatasetFormat:
    return get_format(fmt) if fmt not in (None, "auto") else find_format(path, kind)


def detect_format(path: str | Path, kind: str | None = None) -> str:
    """The registered name of the format at ``path`` (a data YAML's ``format:`` wins)."""
    return find_format(path, kind).name


def dataset_splits(path: str | Path, fmt: str | None = None) -> list[str | None]:
    """Split names present at ``path``; ``[None]`` when it is one undivided set."""
    path = Path(path)
    return _resolve(path, fmt, None).splits(path)


def read_dataset(
    path: str | Path,
    fmt: str | None = None,
    split: str | None = None,
    classes: list[str] | None = None,
    strict: bool = False,
    kind: str | None = "detection",
) -> Any:
    """Read ``split`` of a data YAML, annotation file or dataset folder (format auto-detected
    unless ``fmt`` names one). For a data YAML, None means ``train``; for a bare root, every
    annotation/image. ``classes`` overrides the class list and its order.
    """
    path = Path(path)
    return _resolve(path, fmt, kind).read(path, split=split, classes=classes, strict=strict)


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
    writer = get_format(fmt)
    if not writer.writable:
        names = ", ".join(format_names(writer.kind, writable=True))
        raise DataError(f"the {fmt} format cannot be written (writable: {names})")
    return writer.write(ds, out_dir, split=split, copy_images=copy_images)


def convert(
    src: str | Path, out_dir: str | Path, to: str, copy_images: bool = True, fmt: str | None = None
) -> Path:
    """Convert every split of ``src`` (anything read_dataset takes) to ``to``; returns data.yaml.

    Samples the reader had to skip or repair are logged as warnings, one per problem.
    """
    src = Path(src)
    reader = _resolve(src, fmt, None)
    writer = get_format(to)
    if not writer.writable or writer.kind != reader.kind:
        names = ", ".join(format_names(reader.kind, writable=True))
        raise DataError(
            f"cannot convert {reader.name} ({reader.kind}) to {to!r} (writable: {names})"
        )
    yaml_path = Path(out_dir) / "data.yaml"
    for split in reader.splits(src):
        ds = reader.read(src, split=split)
        for file, reason in ds.problems:
            log.warning("%s: %s", file, reason)
        yaml_path = writer.write(ds, out_dir, split=split or "train", copy_images=copy_images)
    return yaml_path



# An own dataset with no val split: this fraction of its images (seeded, by file name) is val.
AUTO_VAL_FRACTION = 0.2


def read_task_split(
    root: str | Path,
    fmt: str | None,
    kind: str,
    split: str,
    classes: list[str] | None = None,
    strict: bool = False,
    ignore_index: int | None = None,
) -> Any:
    """What a task reads for ``data.<split>``: ``root`` in format ``fmt`` (None/``auto``:
    auto-detected among the formats of ``kind``). The one data path of every task that reads
    labelled images (classification, boxes, masks, lanes).

    A data YAML names its own format (a different ``fmt`` is an error) and its own split rules.
    A dataset without a val split — no splits at all (a VOC folder without ImageSets, a bare
    ``images/`` + ``masks/``) or only ``train`` (CamVid's SegNet layout as distributed) — is
    divided deterministically: ``AUTO_VAL_FRACTION`` of it, chosen with seed 0, is ``val``; one
    of a single image cannot be, and its ``val`` is a DataError (never val == train unsaid).
    ``ignore_index`` (mask formats only) is the label value that means unlabelled, e.g.
    CamVid's void = 11; None keeps the dataset's own.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data.root: dataset not found: {root}")
    try:
        reader = find_format(root, kind)
    except DataError as e:
        if fmt in (None, "auto"):
            raise DataError(f"data.root: {e}") from None
        reader = get_format(fmt)
    if fmt not in (None, "auto") and reader.name != fmt:
        if data_yaml_of(root) is not None:
            raise ConfigError(
                f"data.format is {fmt!r} but {data_yaml_of(root)} describes a {reader.name} "
                "dataset; remove data.format (a data YAML names its own format)"
            )
        reader = get_format(fmt)
    if not reader.serves(kind):
        raise ConfigError(f"data.format {fmt!r} holds {reader.kind} data, not {kind}")
    if reader.kind == "classification":
        return _read_classification_split(reader, root, split, classes, strict)
    options = {} if ignore_index is None else {"ignore_index": int(ignore_index)}
    found = reader.splits(root)
    if found in ([None], ["train"]) and data_yaml_of(root) is None and split in ("train", "val"):
        source = found[0]
        ds = reader.read(root, split=source, classes=classes, strict=strict, **options)
        # Box, mask and lane sets hold out by records (datayaml.holdout); classification has
        # its own branch above; sequences (depth) name their frames in split files.
        if reader.kind in ("detection", "segmentation", "lanes") and len(ds.records) > 1:
            n_val = max(1, round(AUTO_VAL_FRACTION * len(ds.records)))
            if split == "train":  # said once per run, not again for the val half
                log.warning(
                    "%s has no val split: holding out %d of its %d %simages for val (seed 0)",
                    root, n_val, len(ds.records), f"{source} " if source else "",
                )
            return holdout(ds, split, n_val, seed=0)
        if split == "val":
            # One image cannot be divided: validating on the training image would score a run
            # on what it trained on, so it is refused, as for a train-only split (box or mask).
            n = len(ds.records)
            raise DataError(
                f"data.root: {root} has no val split and too few images to hold out ({n} "
                f"image{'s' * (n != 1)}): add images, or a val split (a data YAML whose val "
                "names the same images validates on them knowingly)"
            )
        return ds
    return reader.read(root, split=split, classes=classes, strict=strict, **options)


def _read_classification_split(
    reader: DatasetFormat, root: Path, split: str, classes: list[str] | None, strict: bool
) -> ClassificationSet:
    """A classification split: a data YAML's ``<split>:`` path, else ``root/<split>`` (a class
    folder root or a CSV), else — for ``train``/``val`` of one undivided set (a flat
    ``<class>/*.jpg`` folder, one label CSV) — the seeded ``AUTO_VAL_FRACTION`` holdout."""
    yaml_file = data_yaml_of(root)
    if yaml_file is not None:
        spec = load_data_yaml(yaml_file)  # format: imagefolder|csv, train:/val: paths
        if spec.splits.get(split) is None:
            raise ConfigError(f"{yaml_file}: no {split!r} split")
        return reader.read(spec.root / spec.splits[split], None, classes, strict)
    if (root / split).exists():
        return reader.read(root, split, classes, strict)
    if split in ("train", "val") and reader.splits(root) == [None]:
        ds = reader.read(root, None, classes, strict)
        if len(ds) > 1:
            n_val = max(1, round(AUTO_VAL_FRACTION * len(ds)))
            if split == "train":  # said once per run, not again for the val half
                log.warning(
                    "%s has no train/val folders: holding out %d of its %d images for val "
                    "(seed 0)", root, n_val, len(ds),
                )
            return holdout(ds, split, n_val, seed=0)
    raise DataError(f"data.root: {root} has no {split!r} split ({root / split} not found)")
