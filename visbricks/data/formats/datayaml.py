"""The data YAML: the one file ``visbricks data check`` and training configs point at.

```yaml
format: voc                 # voc | coco | yolo
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
as list or dict, ``nc``) load as YOLO unchanged.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ...errors import ConfigError
from ..records import DetectionSet
from .coco import read_coco
from .voc import read_voc
from .yolo import read_yolo

FORMATS = ("voc", "coco", "yolo")
SPLITS = ("train", "val", "test")
# "download" is accepted so Ultralytics files load unchanged, and ignored: data is never fetched.
KEYS = (
    *("format", "root", "path", "classes", "names", "nc", "images", "annotations", "split"),
    *("download", *SPLITS),
)
_SPLIT_RULE_KEYS = ("val_last", "val_fraction", "seed")


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
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"data YAML not found: {path}") from None
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read data YAML {path}: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys ({', '.join(KEYS)})")
    for key in raw:
        _check_key(path, str(key), KEYS, "key")

    fmt = raw.get("format") or ("yolo" if "names" in raw or "path" in raw else None)
    if fmt is None:
        raise ConfigError(f"{path}: 'format' is missing (one of {', '.join(FORMATS)})")
    _check_key(path, str(fmt), FORMATS, "format")
    root = _root(path, raw)
    spec = DataSpec(
        source=path,
        format=fmt,
        root=root,
        classes=_classes(path, raw),
        splits={s: raw[s] for s in SPLITS if s in raw},
        images=_optional_str(path, raw, "images"),
        annotations=_optional_str(path, raw, "annotations"),
        split_rule=_split_rule(path, raw.get("split")),
    )
    for name, value in spec.splits.items():
        _check_split_value(path, fmt, name, value)
    if spec.split_rule and ("val" in spec.splits or "test" in spec.splits):
        raise ConfigError(f"{path}: 'split' derives val from train; remove 'val'/'test' or 'split'")
    if not spec.splits:
        spec.splits = _default_splits(spec)
    elif spec.split_rule:
        spec.splits = {"train": spec.splits.get("train")}
    return spec


def read_split(spec: DataSpec, split: str, strict: bool = False) -> DetectionSet:
    """Read one split (``train``/``val``/``test``) of a data YAML as a DetectionSet.

    With a ``split:`` rule both halves come from the ``train`` source; problems found reading
    that shared source are reported once, with ``train``.
    """
    names = spec.split_names()
    if split not in names:
        raise ConfigError(f"{spec.source}: no {split!r} split (it has: {', '.join(names)})")
    if not spec.split_rule:
        return _read_source(spec, spec.splits[split], strict)
    ds = _read_source(spec, spec.splits.get("train"), strict)
    # Sorting first makes the split independent of the order files were listed or read in.
    order = sorted(range(len(ds.records)), key=lambda i: ds.records[i].file)
    n = len(order)
    rule = spec.split_rule
    n_val = rule["val_last"] if "val_last" in rule else round(rule["val_fraction"] * n)
    if n_val >= n:
        raise ConfigError(f"{spec.source}: split {rule} leaves none of the {n} images for train")
    if "val_last" in rule:
        val = set(order[n - n_val :])
    else:
        val = {order[i] for i in np.random.default_rng(rule.get("seed", 0)).permutation(n)[:n_val]}
    chosen = [i for i in order if (i in val) == (split == "val")]
    return DetectionSet(
        root=ds.root,
        classes=ds.classes,
        records=[ds.records[i] for i in chosen],
        problems=ds.problems if split == "train" else [],
    )


def _read_source(spec: DataSpec, value: Any, strict: bool) -> DetectionSet:
    root = spec.root
    if spec.format == "voc":
        return read_voc(
            root,
            image_set=value,
            classes=spec.classes,
            annotations=spec.annotations,
            images=spec.images,
            strict=strict,
        )
    if spec.format == "yolo":
        dirs = [value] if isinstance(value, str) else value
        return read_yolo(root, image_dirs=dirs, classes=spec.classes, strict=strict)
    if isinstance(value, str):
        json_rel, images = value, spec.images
    else:
        json_rel, images = value["annotations"], value.get("images", spec.images)
    return read_coco(
        root / json_rel,
        images=root / images if images else None,
        classes=spec.classes,
        strict=strict,
        search=[root / "images", root],
    )


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
        return None
    if isinstance(value, dict):  # Ultralytics {0: person, 1: car}: ids must be 0..C-1
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


def _check_split_value(path: Path, fmt: str, name: str, value: Any) -> None:
    if isinstance(value, str) or (value is None and fmt != "coco"):
        return
    if fmt == "yolo" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return
    if fmt == "coco" and isinstance(value, dict):
        for key in value:
            _check_key(path, f"{key}", ("annotations", "images"), f"key in '{name}'")
        if isinstance(value.get("annotations"), str):
            return
    expected = {
        "voc": "an ImageSets txt path",
        "coco": "a JSON path or {annotations: JSON, images: FOLDER}",
        "yolo": "an image folder or a list of them",
    }[fmt]
    raise ConfigError(f"{path}: '{name}' must be {expected}, got {value!r}")


def _default_splits(spec: DataSpec) -> dict[str, Any]:
    if spec.format == "voc":
        main = spec.root / "ImageSets" / "Main"
        found = {s: f"ImageSets/Main/{s}.txt" for s in SPLITS if (main / f"{s}.txt").is_file()}
        return found or {"train": None}
    if spec.format == "yolo":
        found = {s: f"images/{s}" for s in SPLITS if (spec.root / "images" / s).is_dir()}
        return found or {"train": "images"}
    raise ConfigError(f"{spec.source}: COCO needs 'train: <annotation json>'")
