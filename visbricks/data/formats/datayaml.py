"""The data YAML: the one file ``visbricks data check`` and training configs point at.

```yaml
format: voc                 # a registered format: voc | coco | yolo | imagefolder | csv ...
root: ../raccoon            # relative to this YAML's folder; default: the YAML's folder
classes: [raccoon]          # optional where the format carries names (COCO, YOLO classes.txt)
images: images              # VOC: image folder when not JPEGImages; COCO: image folder
annotations: annotations    # VOC: annotation folder when not Annotations
train: ImageSets/Main/train.txt   # split specs, relative to root (see below)
val: ImageSets/Main/val.txt
split: {val_last: 40}       # or {val_fraction: 0.2, seed: 0}, for data without split files
```

Split specs per format: VOC, an ImageSets txt (omitted: ``ImageSets/Main/<split>.txt`` when
present, else every annotation is ``train``); COCO, a JSON path, or ``{annotations: JSON,
images: FOLDER}``; YOLO, an image folder or a list of them (omitted: ``images/train`` and
``images/val`` when present, else all of ``images/``). Ultralytics files (``path``, ``names``
as list or dict, ``nc``) load as YOLO unchanged. Which format reads a split spec, what it accepts
and its default splits are the format class's business (:class:`DetectionFormat` hooks), so the
YAML dispatches through the ``DATASETS`` registry and knows no format by name.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml

from ...errors import ConfigError, DataError
from ..classification import ClassificationSet
from ..records import DetectionSet
from .base import SPLITS, DatasetFormat, data_yaml_of, format_names, get_format, read_yaml_mapping

# "download" is accepted so Ultralytics files load unchanged, and ignored: data is never fetched.
KEYS = (
    *("format", "root", "path", "classes", "names", "nc", "images", "annotations", "split"),
    *("download", *SPLITS),
)
_SPLIT_RULE_KEYS = ("val_last", "val_fraction", "seed")
# A box set or a subclass (masks, lanes) kept as itself, or an image-label set.
SetT = TypeVar("SetT", bound=DetectionSet | ClassificationSet)


@dataclass
class DataSpec:
    source: Path  # the YAML file, for error messages
    format: str
    root: Path
    classes: list[str] | None
    splits: dict[str, Any]  # split name -> spec as written (None: the whole dataset)
    images: str | None = None
    annotations: str | None = None
    split_rule: dict[str, Any] = field(default_factory=dict)  # val_last / val_fraction + seed

    def split_names(self) -> list[str]:
        return ["train", "val"] if self.split_rule else list(self.splits)


def load_data_yaml(path: str | Path) -> DataSpec:
    """Parse and validate a data YAML; errors name the file and the key at fault."""
    path = Path(path)
    try:
        raw = read_yaml_mapping(path)
    except DataError as e:  # a data YAML given as config: its faults are config errors
        raise ConfigError(f"{e} ({', '.join(KEYS)})" if "mapping" in str(e) else str(e)) from None
    for key in raw:
        _check_key(path, str(key), KEYS, "key")

    fmt = raw.get("format") or _sniff_yaml(path)
    if fmt is None:
        raise ConfigError(f"{path}: 'format' is missing (one of {', '.join(format_names())})")
    _check_key(path, str(fmt), tuple(format_names()), "format")
    handler = get_format(fmt)
    root = _root(path, raw)
    spec = DataSpec(
        source=path,
        format=fmt,
        root=root,
        classes=_classes(path, raw),
        splits={s: raw[s] for s in SPLITS if s in raw},
        images=_optional_str(path, raw, "images"),
        annotations=_optional_str(path, raw, "annotations"),
        split_rule=split_rule(path, raw.get("split"), raw),
    )
    for name, value in spec.splits.items():
        if not handler.split_value_ok(value):
            raise ConfigError(f"{path}: '{name}' must be {handler.split_help}, got {value!r}")
    if not spec.splits:
        spec.splits = handler.default_splits(spec)
    elif spec.split_rule:
        spec.splits = {"train": spec.splits.get("train")}
    return spec


def read_split(spec: DataSpec, split: str, strict: bool = False) -> Any:
    """Read one split (``train``/``val``/``test``) of a data YAML as a DetectionSet.

    With a ``split:`` rule both halves come from the ``train`` source; problems found reading
    that shared source are reported once, with ``train``.
    """
    names = spec.split_names()
    if split not in names:
        raise ConfigError(f"{spec.source}: no {split!r} split (it has: {', '.join(names)})")
    handler = get_format(spec.format)
    if not spec.split_rule:
        return handler.read_source(spec, spec.splits[split], strict)
    ds = handler.read_source(spec, spec.splits.get("train"), strict)
    return apply_split_rule(ds, spec.split_rule, split, spec.source)


def apply_split_rule(ds: DetectionSet, rule: dict[str, Any], split: str, source: Path) -> Any:
    """The ``train`` or ``val`` part of ``ds`` under a data YAML's ``split:`` rule (parsed by
    :func:`split_rule`): ``{val_last: N}`` or ``{val_fraction: F, seed: S}``. Box and mask data
    YAMLs both divide their ``train`` source here, so one rule means one split everywhere."""
    if not isinstance(ds, DetectionSet):
        raise ConfigError(f"{source}: 'split' rules work for box and mask datasets only")
    n = len(ds.records)
    n_val = rule["val_last"] if "val_last" in rule else round(rule["val_fraction"] * n)
    if n_val >= n:
        raise ConfigError(f"{source}: split {rule} leaves none of the {n} images for train")
    return holdout(ds, split, n_val, rule.get("seed", 0), "val_last" in rule)


def holdout(ds: SetT, split: str, n_val: int, seed: int = 0, last: bool = False) -> SetT:
    """The ``train`` or ``val`` part of ``ds`` (a DetectionSet or a subclass, e.g. a mask set,
    a LaneSet, or a ClassificationSet; other fields are kept) when ``n_val`` images are held out
    for val: the last ``n_val`` by file name (``last``) or a seeded random choice. Problems found
    reading the shared source are reported once, with ``train``."""
    files = ds.files if isinstance(ds, ClassificationSet) else [r.file for r in ds.records]
    # Sorting first makes the split independent of the order files were listed or read in.
    order = sorted(range(len(files)), key=lambda i: files[i])
    n = len(order)
    if last:
        val = set(order[n - n_val :])
    else:
        val = {order[i] for i in np.random.default_rng(seed).permutation(n)[:n_val]}
    chosen = [i for i in order if (i in val) == (split == "val")]
    problems = ds.problems if split == "train" else []
    if isinstance(ds, ClassificationSet):
        return replace(
            ds,
            files=[ds.files[i] for i in chosen],
            labels=[ds.labels[i] for i in chosen],
            problems=problems,
        )
    part = replace(ds, records=[ds.records[i] for i in chosen], problems=problems)
    # A held-out part has always numbered its categories c + 1 (category_ids None): kept, so
    # the box tasks' results files stay as they were.
    if hasattr(part, "category_ids"):  # box and mask sets; a lane set has no categories
        part = replace(part, category_ids=None)
    if hasattr(part, "skipped") and split != "train":  # a lane set's dropped entries, as problems
        part = replace(part, skipped=[])
    return part


def _check_key(path: Path, key: str, valid: tuple[str, ...], what: str) -> None:
    if key in valid:
        return
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{path}: unknown {what} {key!r}{hint} (valid: {', '.join(valid)})")


def _root(path: Path, raw: dict[str, Any]) -> Path:
    if "root" in raw and "path" in raw:
        raise ConfigError(f"{path}: give 'root' or its Ultralytics alias 'path', not both")
    key = "root" if "root" in raw else "path"
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{path}: '{key}' must be a folder path, got {value!r}")
    root = Path(value or ".").expanduser()
    root = root if root.is_absolute() else path.parent / root
    if not root.is_dir():
        raise ConfigError(f"{path}: '{key}' folder {root} does not exist")
    return root


def _classes(path: Path, raw: dict[str, Any]) -> list[str] | None:
    if "classes" in raw and "names" in raw:
        raise ConfigError(f"{path}: give 'classes' or its Ultralytics alias 'names', not both")
    key = "classes" if "classes" in raw else "names"
    value = raw.get(key)
    if value is None:
        nc = raw.get("nc")
        if isinstance(nc, int) and not isinstance(nc, bool) and nc > 0:
            return [f"class_{i}" for i in range(nc)]  # Ultralytics' names when only nc is given
        return None
    if isinstance(value, dict):  # Ultralytics {0: person, 1: car}: ids must be 0..C-1
        try:  # Ultralytics reads keys with int(): {'0': a} is as good as {0: a}
            value = {int(k): v for k, v in value.items()}
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: '{key}' ids must be integers, got {list(value)}") from None
        if sorted(value) != list(range(len(value))):
            raise ConfigError(f"{path}: '{key}' ids must be 0..{len(value) - 1}, got {list(value)}")
        value = [value[i] for i in range(len(value))]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{path}: '{key}' must be a list of class names")
    if len(set(value)) != len(value):
        raise ConfigError(f"{path}: '{key}' lists a class twice")
    if "nc" in raw and raw["nc"] != len(value):
        raise ConfigError(f"{path}: 'nc' is {raw['nc']} but '{key}' has {len(value)} names")
    return value


def _optional_str(path: Path, raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{path}: '{key}' must be a folder name, got {value!r}")
    return value


def split_rule(path: Path, value: Any, splits: dict[str, Any]) -> dict[str, Any]:
    """A data YAML's ``split:`` value checked (``{}`` when absent); ``splits`` are the split
    keys the file gives: a rule derives val from train, so it cannot come with ``val``/``test``.
    """
    rule = _split_rule(path, value)
    if rule and ("val" in splits or "test" in splits):
        raise ConfigError(f"{path}: 'split' derives val from train; remove 'val'/'test' or 'split'")
    return rule


def _split_rule(path: Path, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(
            f"{path}: 'split' must be {{val_last: N}} or {{val_fraction: F, seed: S}}"
        )
    for key in value:
        _check_key(path, f"{key}", _SPLIT_RULE_KEYS, "split key")
    if ("val_last" in value) == ("val_fraction" in value):
        raise ConfigError(f"{path}: 'split' needs exactly one of val_last, val_fraction")
    last, fraction = value.get("val_last"), value.get("val_fraction")
    if last is not None and (not isinstance(last, int) or isinstance(last, bool) or last < 0):
        raise ConfigError(f"{path}: 'split.val_last' must be an integer >= 0, got {last!r}")
    if fraction is not None and not (isinstance(fraction, (int, float)) and 0 <= fraction < 1):
        raise ConfigError(f"{path}: 'split.val_fraction' must be in [0, 1), got {fraction!r}")
    if not isinstance(value.get("seed", 0), int):
        raise ConfigError(f"{path}: 'split.seed' must be an integer, got {value['seed']!r}")
    return dict(value)


def _sniff_yaml(path: Path) -> str | None:
    """The format of a data YAML without ``format:`` (Ultralytics' ``names``/``path`` → yolo)."""
    for name in format_names():
        if get_format(name).sniff(path):
            return name
    return None


class DetectionFormat(DatasetFormat):
    """A box format (VOC, COCO, YOLO): read from a data YAML or a dataset root, written with a
    data YAML that accumulates the splits. Subclasses implement the ``*_root`` / ``*_source``
    hooks; this class owns the YAML side, so every box format treats it identically."""

    kind = "detection"
    writable = True
    split_help = "a split path"  # what a split value in the data YAML may be, for errors

    # ---- DatasetFormat ------------------------------------------------------------------------
    def read(
        self,
        path: str | Path,
        split: str | None = None,
        classes: list[str] | None = None,
        strict: bool = False,
    ) -> DetectionSet:
        path = Path(path)
        yaml_file = data_yaml_of(path)
        if yaml_file is not None:
            spec = load_data_yaml(yaml_file)
            if classes is not None:
                spec.classes = list(classes)
            return read_split(spec, split or "train", strict=strict)
        return self.read_root(path, split, classes, strict)

    def splits(self, path: str | Path) -> list[str | None]:
        path = Path(path)
        yaml_file = data_yaml_of(path)
        if yaml_file is not None:
            return list(load_data_yaml(yaml_file).split_names())
        return self.root_splits(path)

    def write(
        self, records: Any, out_dir: str | Path, split: str = "train", **options: Any
    ) -> Path:
        """Write ``records`` (a DetectionSet) as ``split``; ``copy_images=False`` hard-links.

        Call once per split into one folder: its ``data.yaml`` accumulates the splits and must
        agree on format and classes.
        """
        copy_images = bool(options.pop("copy_images", True))
        if options:
            raise ConfigError(f"unknown {self.name} write option(s): {', '.join(options)}")
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r} (one of {', '.join(SPLITS)})")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        yaml_path = out / "data.yaml"
        existing = self._existing_splits(yaml_path, records.classes)
        entries = self.write_split(records, out, split, copy_images)
        (out / "classes.txt").write_text(
            "".join(f"{c}\n" for c in records.classes), encoding="utf-8"
        )
        written = existing | entries
        ordered = {s: written[s] for s in SPLITS if s in written}
        doc = self.yaml_doc(out, list(records.classes), ordered)
        yaml_path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), "utf-8")
        return yaml_path

    # ---- hooks --------------------------------------------------------------------------------
    def read_root(
        self, root: Path, split: str | None, classes: list[str] | None, strict: bool
    ) -> DetectionSet:
        raise NotImplementedError

    def root_splits(self, root: Path) -> list[str | None]:
        return [None]

    def write_split(
        self, ds: DetectionSet, out: Path, split: str, copy_images: bool
    ) -> dict[str, Any]:
        raise NotImplementedError

    def read_source(self, spec: DataSpec, value: Any, strict: bool) -> DetectionSet:
        """Read the split whose data-YAML value is ``value`` (None: the whole dataset); by
        default ``value`` is a folder under the root laid out as this format's root."""
        root = spec.root / value if value is not None else spec.root
        return self.read_root(root, None, spec.classes, strict)

    def split_value_ok(self, value: Any) -> bool:
        return value is None or isinstance(value, str)

    def default_splits(self, spec: DataSpec) -> dict[str, Any]:
        return {"train": None}

    def yaml_doc(self, out: Path, classes: list[str], splits: dict[str, Any]) -> dict[str, Any]:
        return {"format": self.name, "root": ".", "classes": classes, **splits}

    def _existing_splits(self, path: Path, classes: list[str]) -> dict[str, Any]:
        if not path.is_file():
            return {}
        raw = read_yaml_mapping(path)
        fmt = raw.get("format") or _sniff_yaml(path)
        try:
            old = _classes(path, raw)
        except ConfigError:
            old = None
        if fmt != self.name or old != list(classes):
            raise DataError(
                f"cannot add a split to {path}: it holds a {fmt} dataset with classes {old}, "
                f"not {self.name} with {list(classes)}; use another output folder"
            )
        return {s: raw[s] for s in SPLITS if s in raw}
