"""labelme lanes: one labelme JSON per image whose ``line`` / ``linestrip`` shapes are the lanes.

Layout: a folder of labelme JSON files (``imagePath`` relative to the JSON, as labelme writes
it; JSONs in sub-folders are read too), or ``train/``, ``val/``, ``test/`` sub-folders of them,
which are then the splits. A JSON's keys are labelme's own: ``imagePath``, ``imageHeight``,
``imageWidth``, ``shapes`` (each ``label``, ``points`` ``[[x, y], ...]`` in pixels,
``shape_type``); ``imageData`` is ignored (the image file is read).

Lanes: shapes whose ``shape_type`` is ``line``, ``linestrip`` or ``polyline`` (what other
annotation tools export in labelme's layout); other shapes (polygons, boxes, points) are not
lanes and are skipped. Labels follow one of two rules, per image:

- **plain**: any label (``lane`` by convention) — the lanes keep the order of the shapes, and
  lane slots are assigned later from where each lane meets the image bottom (as for TuSimple);
- **slots**: every lane's label names one of CULane's four slots, left to right ``l1 l0 r0 r1``
  (outer left, ego left, ego right, outer right) or ``lane0 lane1 lane2 lane3`` — the lanes are
  put in slot order and the record carries CULane's existence flags, so ``--to culane`` writes
  exactly those slots. An image mixing slot and other labels, or labelling one slot twice, is
  reported and read with the plain rule.

Read into a :class:`~visbricks.data.lanes.LaneSet` whose root is the folder given (paths of split
folders start with the split), each record naming its JSON (``label_file``) and each lane its
shape (``lane_names``), so ``data check`` points at the shape to fix. Problems (each with its
JSON): unreadable JSON, an image that is missing or escapes the dataset, a size that disagrees
with the image (the image's size is used).

Writing puts each image at ``<out>/<split>/<path>`` (a path that already starts with the split
folder keeps it) with its JSON beside it: ``imagePath`` is the image's name, lanes with two
points are ``line`` shapes, longer ones ``linestrip``, labels ``lane`` (or the slot names when
the record has CULane flags); lanes without points are dropped (labelme cannot hold them).

What round-trips exactly: labelme → TuSimple → labelme gives the same JSON (``imagePath``,
sizes, shapes, labels ``lane``, point values and order) when every lane's points lie on rows
that all lanes of that image crossing the row share — TuSimple samples every lane of an image on
one set of rows (``h_samples``), so a lane that misses another lane's row inside its own extent
gains a point there (interpolated, x to 0.001 px) — and when each lane's points run top to
bottom (TuSimple's order). Integer pixel points on TuSimple-style ``h_samples`` rows (e.g. every
10 px) satisfy both. Slot labels do not survive TuSimple (it has no slots); they survive
labelme → CULane → labelme.
"""

from __future__ import annotations

import itertools
import json
import posixpath
import re
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import yaml

from ...errors import DataError
from ...registry import DATASETS
from ..io import image_size, safe_join
from ..lanes import LaneRecord, LaneSet
from ._common import ProblemLog, place_image
from .base import SPLITS, DatasetFormat, is_yaml, read_yaml_mapping

LANE_SHAPES = ("line", "linestrip", "polyline")
SLOT_NAMES = ("l1", "l0", "r0", "r1")  # CULane's four slots, left to right
SLOT_LABELS = {
    **{name: k for k, name in enumerate(SLOT_NAMES)},
    **{f"lane{k}": k for k in range(len(SLOT_NAMES))},
}
_SNIFF_FILES = 50  # JSONs a sniff opens at most: a lane dataset shows a line shape long before
_SNIFF_BYTES = 1 << 20  # of each, the head searched for a lane shape type
_LANE_TYPE = re.compile(r'"shape_type"\s*:\s*"(?:' + "|".join(LANE_SHAPES) + ')"')
FORMAT_VERSION = "4.0.0"  # the labelme file layout written (labelme 4 and 5 both read it)


def _labelme_doc(path: Path) -> dict | None:
    """The JSON at ``path`` when it is a labelme annotation (``shapes`` + ``imagePath``)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if isinstance(doc, dict) and isinstance(doc.get("shapes"), list) and "imagePath" in doc:
        return doc
    return None


def _looks_like_lanes(path: Path) -> bool:
    """A cheap look for sniffing: the file's head names a lane shape type and ``shapes`` (a
    labelme file lists its shapes before the embedded image), so a 500 MB COCO JSON in the same
    tree is never parsed; a match is then confirmed by reading the file."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES).decode("utf-8", "replace")
    except OSError:
        return False
    if '"shapes"' not in head or not _LANE_TYPE.search(head):
        return False
    doc = _labelme_doc(path)
    return doc is not None and _has_lane(doc)


def _has_lane(doc: dict) -> bool:
    return any(isinstance(s, dict) and s.get("shape_type") in LANE_SHAPES for s in doc["shapes"])


def _root(path: Path) -> Path:
    if is_yaml(path):
        return path.parent / str(read_yaml_mapping(path).get("path", "."))
    return path


def _split_folders(root: Path) -> list[str]:
    return [s for s in SPLITS if (root / s).is_dir() and any((root / s).rglob("*.json"))]


def _num(v: float) -> Any:
    return int(v) if float(v).is_integer() else float(v)


@DATASETS.register("labelme_lanes")
class LabelmeLanes(DatasetFormat):
    kind = "lanes"
    looks_for = "labelme *.json with line/linestrip shapes (optionally in train/, val/, test/)"
    priority = 15  # before COCO's "any .json": a labelme folder is recognised by its shapes
    writable = True

    @classmethod
    def sniff(cls, path: Path) -> bool:
        path = Path(path)
        if not path.is_dir():
            return False
        # Unsorted and bounded: a big folder is not listed in full just to be recognised.
        return any(
            _looks_like_lanes(f) for f in itertools.islice(path.rglob("*.json"), _SNIFF_FILES)
        )

    def splits(self, path: str | Path) -> list[str | None]:
        return list(_split_folders(_root(Path(path)))) or [None]

    def read(
        self,
        path: str | Path,
        split: str | None = None,
        classes: list[str] | None = None,
        strict: bool = False,
    ) -> LaneSet:
        root = _root(Path(path))
        if not root.is_dir():
            raise DataError(f"labelme lanes folder not found: {root}")
        found = _split_folders(root)
        if split is not None and split not in found:
            hint = (
                f"found: {', '.join(found)}"
                if found
                else "it is one set: put the JSONs in train/ and val/, or convert it"
            )
            raise DataError(
                f"{root}: no {split}/ folder of labelme JSONs for split {split!r} ({hint})"
            )
        folders = [root / split] if split is not None else [root]
        log = ProblemLog(strict)
        records = []
        for folder in folders:
            for file in sorted(folder.rglob("*.json")):
                rec = self._record(root, file, log)
                if rec is not None:
                    records.append(rec)
        return LaneSet(root, records, log.items, skipped=log.skipped)

    @staticmethod
    def _record(root: Path, file: Path, log: ProblemLog) -> LaneRecord | None:
        where = file.relative_to(root).as_posix()
        doc = _labelme_doc(file)
        if doc is None:
            log.skip(where, "not a labelme JSON (needs 'shapes' and 'imagePath')")
            return None
        image_rel = _image_path(root, file, str(doc["imagePath"]))
        if image_rel is None:
            image = doc["imagePath"]
            reason = f"missing image {image!r} (imagePath; looked for beside the JSON)"
            log.skip(where, reason, "missing image(s)")
            return None
        try:
            w, h = image_size(safe_join(root, image_rel))
        except DataError as e:
            log.skip(where, f"image {image_rel}: {e}", "unreadable image(s)")
            return None
        said = (doc.get("imageWidth"), doc.get("imageHeight"))
        if said != (w, h):
            # Points were drawn on the image as it is now: its real size is the one to use.
            log.add(
                where,
                f"imageWidth/imageHeight say {said[0]}x{said[1]} but {image_rel} is "
                f"{w}x{h}; the image's size is used",
            )
        lanes, names, labels = [], [], []
        for i, shape in enumerate(doc["shapes"]):
            if not isinstance(shape, dict) or shape.get("shape_type") not in LANE_SHAPES:
                continue
            try:
                pts = np.asarray(shape.get("points") or [], float).reshape(-1, 2)
            except (TypeError, ValueError):
                log.skip(where, f"shape {i}: points are not [[x, y], ...] numbers")
                return None
            label = str(shape.get("label", ""))
            lanes.append(pts)
            labels.append(label)
            names.append(f"lane {len(names)} (shape {i}, {label!r})")
        exist = None
        slots = [SLOT_LABELS.get(lb) for lb in labels]
        if lanes and any(s is not None for s in slots):
            plain = sorted({lb for lb, s in zip(labels, slots) if s is None})
            taken = [s for s in slots if s is not None]
            if plain:
                log.add(
                    where,
                    f"mixes slot labels with {', '.join(map(repr, plain))} (slots: "
                    f"{' '.join(SLOT_NAMES)} or lane0..lane3); read as plain lanes",
                )
            elif len(set(taken)) != len(taken):
                twice = sorted({SLOT_NAMES[s] for s in taken if taken.count(s) > 1})
                log.add(where, f"slot {', '.join(twice)} labelled twice; read as plain lanes")
            else:
                order = sorted(range(len(lanes)), key=lambda k: slots[k])
                lanes, names = [lanes[k] for k in order], [names[k] for k in order]
                exist = [int(k in taken) for k in range(len(SLOT_NAMES))]
        return LaneRecord(image_rel, w, h, lanes, exist=exist, label_file=where, lane_names=names)

    def write(
        self,
        records: LaneSet,
        out_dir: str | Path,
        split: str = "train",
        copy_images: bool = True,
        **options: Any,
    ) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for rec in records.records:
            rel = rec.file if rec.file.startswith(f"{split}/") else f"{split}/{rec.file}"
            src = safe_join(records.root, rec.file)
            dst = safe_join(out, rel)
            if src.resolve() != dst.resolve():
                place_image(src, dst, copy_images)
            dst.with_suffix(".json").write_text(
                json.dumps(_doc(rec, dst.name), indent=2) + "\n", encoding="utf-8"
            )
        yaml_path = out / "data.yaml"
        doc = read_yaml_mapping(yaml_path) if yaml_path.exists() else {}
        if doc.get("format", "labelme_lanes") != "labelme_lanes":
            raise DataError(f"{yaml_path} describes a {doc['format']} dataset, not labelme_lanes")
        doc.update({"format": "labelme_lanes", "path": "."})
        yaml_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return yaml_path


def _image_path(root: Path, file: Path, image_path: str) -> str | None:
    """The image of a JSON, relative to ``root``: ``imagePath`` from the JSON's folder (labelme's
    rule; Windows separators accepted), else a file of that name beside the JSON (an absolute
    path from another machine). None when neither is inside the dataset."""
    base = file.parent.relative_to(root).as_posix()
    given = image_path.replace("\\", "/")
    candidates = [] if PurePosixPath(given).is_absolute() else [posixpath.join(base, given)]
    candidates.append(posixpath.join(base, PurePosixPath(given).name))
    for rel in candidates:
        rel = posixpath.normpath(rel)
        try:
            if safe_join(root, rel).is_file():
                return rel
        except DataError:  # escapes the root: try the name beside the JSON
            continue
    return None


def _doc(rec: LaneRecord, image_name: str) -> dict:
    """One record as labelme writes a file (its keys, in its order)."""
    slots = [k for k, f in enumerate(rec.exist or []) if f]
    named = rec.exist is not None and len(rec.exist) == len(SLOT_NAMES)
    named = named and len(slots) == len(rec.lanes)
    shapes = []
    for k, lane in enumerate(rec.lanes):
        if len(lane) == 0:
            continue
        shapes.append(
            {
                "label": SLOT_NAMES[slots[k]] if named else "lane",
                "points": [[_num(x), _num(y)] for x, y in lane],
                "group_id": None,
                "shape_type": "line" if len(lane) == 2 else "linestrip",
                "flags": {},
            }
        )
    return {
        "version": FORMAT_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": image_name,
        "imageData": None,
        "imageHeight": rec.height,
        "imageWidth": rec.width,
    }
