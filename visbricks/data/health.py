"""Dataset health: what a data set holds and where it repeats itself, before anything trains.

``dataset_health(train, val, classes)`` reads the records of a split as the formats give them
(or as a task's datasets hold them) and decodes every image once, without augmentation:

- class counts per split (images per class for image labels, objects per class for boxes and
  lanes, labelled pixels per class for masks) and the imbalance ratio (largest / smallest
  count; infinite when a class has none);
- box sizes (square root of the area, pixels) and aspect ratios (width / height) for box data;
- the share of labelled pixels of each class for mask data (pixels outside the class range and
  the ignore index are counted apart);
- the distribution of image sizes;
- **exact duplicates**: the same decoded pixels (a BLAKE2 hash of the RGB array and its shape,
  so a PNG and its lossless re-encoding are one image), grouped;
- **near duplicates**: a perceptual hash (DCT pHash) of each image — grey, resized to 32×32
  with an area filter, 2-D DCT, the 8×8 lowest frequencies without the DC term, each bit set
  when its coefficient is above their median (63 bits) — and every pair at a Hamming distance
  ``<= NEAR_BITS`` (10 of 63; distances come in even steps, as every hash has 31 bits set).
  Measured on the hymenoptera photos (250 of them): a 0.7× resize re-encoded as JPEG quality 60
  lies at most 6 bits from its source (median 0), different photos at least 14 (median 32). Flat
  synthetic images are less stable (a few of the shapes images move up to ~20 bits under that
  change), and the grey hash pairs flat images of different colours, so a pair must also pass a
  colour check: the RMS difference of their 16×16 RGB area-averaged thumbnails is at most
  ``THUMB_RMS`` (24 of 255). Resized and re-compressed copies stay under 15 (shapes) and 4
  (photos); the hash-only pairs of different synthetic images were all above 65. Exact pairs are
  not listed again as near ones.

Duplicates are looked for within each split and across train/val: one that crosses the split is
*leakage* (the validation measures memory, not generalisation). Everything is listed by file.

``write_health_report`` writes the same as ``health.html`` (self-contained: inline CSS, no script,
no network) with its figures as ``health_*.png`` beside it; the run report links it.
"""

from __future__ import annotations

import hashlib
import html
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError
from ..files import atomic_write
from .io import read_image

HASH_SIZE = 32  # the grey image the DCT is taken of
LOW = 8  # the lowest LOW × LOW frequencies make the hash
NEAR_BITS = 10  # of 63: at most this many differing bits is a near duplicate
THUMB = 16  # side of the colour thumbnail a near pair is verified on
THUMB_RMS = 24.0  # of 255: the largest RMS difference of two thumbnails of one image
MAX_LISTED = 500  # duplicate entries kept in the dict / shown in the page (counts stay exact)
MAX_THUMBS = 24  # duplicate pairs drawn side by side in the page
THUMB_PX = 96


@dataclass
class _Item:
    path: Path  # the image file
    name: str  # as listed: relative to the dataset root when there is one
    labels: list[int] = field(default_factory=list)  # image labels, or one per object
    boxes: np.ndarray | None = None  # (N, 4) XYXY pixels (box datasets)
    mask: Path | None = None  # the semantic mask (mask datasets)


@dataclass
class _Split:
    kind: str  # classification | boxes | masks | lanes | images
    items: list[_Item]
    classes: list[str]
    ignore_index: int = 255


# --- Reading records without augmentation -------------------------------------------------------


def _records_split(ds: Any, classes: list[str] | None) -> _Split:
    """The records of ``ds``: a format's set (ClassificationSet, DetectionSet, SegmentationSet,
    LaneSet), a task's dataset built on one (LabelledImages, DetectionDataset,
    SegmentationDataset, LaneDataset, SequenceDataset), a torch ``Subset`` of those, or a
    sequence of image paths."""
    from torch.utils.data import Subset

    from .classification import ClassificationSet, LabelledImages
    from .records import DetectionSet

    if isinstance(ds, Subset):
        inner = _records_split(ds.dataset, classes)
        inner.items = [inner.items[i] for i in ds.indices]
        return inner
    if isinstance(ds, ClassificationSet):
        items = [_Item(ds.root / f, f, list(labels)) for f, labels in zip(ds.files, ds.labels)]
        return _Split("classification", items, list(classes or ds.classes))
    if isinstance(ds, LabelledImages):
        root = _common_root([Path(f) for f in ds.files])
        items = [
            _Item(Path(f), _relative(Path(f), root), list(t) if isinstance(t, list) else [int(t)])
            for f, t in zip(ds.files, ds.targets)
        ]
        return _Split("classification", items, list(classes or ds.classes))
    inner_set = getattr(ds, "dataset", None)
    if isinstance(inner_set, DetectionSet):
        # DetectionDataset, or SegmentationDataset (whose .records are its set's masked ones)
        return _detection_split(inner_set, getattr(ds, "records", inner_set.records), classes)
    if isinstance(ds, DetectionSet):
        return _detection_split(ds, ds.records, classes)
    lane_set = getattr(ds, "set", ds)  # LaneDataset keeps its LaneSet as .set
    if hasattr(lane_set, "records") and all(hasattr(r, "lanes") for r in lane_set.records):
        items = [
            _Item(lane_set.root / r.file, r.file, [0] * len(r.lanes)) for r in lane_set.records
        ]
        return _Split("lanes", items, list(classes or getattr(lane_set, "classes", ["lane"])))
    if hasattr(ds, "samples") and hasattr(ds, "sequences"):  # SequenceDataset: target frames
        files = [ds.sequences[name].frames[index] for name, index in ds.samples]
        return _paths_split(files, classes)
    if isinstance(ds, (list, tuple)) and all(isinstance(p, (str, Path)) for p in ds):
        return _paths_split([Path(p) for p in ds], classes)
    raise DataError(
        f"dataset health: cannot read the records of a {type(ds).__name__} (give a format's "
        "set, a task's dataset or a list of image paths)"
    )


def _detection_split(ds: Any, records: Sequence[Any], classes: list[str] | None) -> _Split:
    """Box records, or mask records when any has a mask (then only those with one)."""
    masks = any(r.mask_file for r in records)
    items = [
        _Item(
            ds.root / r.file,
            r.file,
            [int(x) for x in r.labels],
            None if masks else np.asarray(r.boxes, dtype=np.float32).reshape(-1, 4),
            _mask_path(ds, r) if r.mask_file else None,
        )
        for r in records
        if not masks or r.mask_file
    ]
    ignore = int(getattr(ds, "ignore_index", 255))
    return _Split("masks" if masks else "boxes", items, list(classes or ds.classes), ignore)


def _mask_path(ds: Any, record: Any) -> Path:
    # A mask set knows where its masks are (coco_masks': a cache outside the dataset root).
    if hasattr(ds, "mask_path"):
        return ds.mask_path(record)
    return ds.root / record.mask_file


def _paths_split(files: Sequence[Path], classes: list[str] | None) -> _Split:
    root = _common_root(list(files))
    return _Split("images", [_Item(f, _relative(f, root)) for f in files], list(classes or []))


def _common_root(files: list[Path]) -> Path | None:
    if not files:
        return None
    try:
        return Path(os.path.commonpath([str(f.parent) for f in files]))
    except ValueError:  # mixed absolute and relative, or drives
        return None


def _relative(file: Path, root: Path | None) -> str:
    if root is None:
        return str(file)
    try:
        return file.relative_to(root).as_posix()
    except ValueError:
        return str(file)


# The kinds whose undivided sets training splits by read_task_split's seeded holdout.
HOLDOUT_KINDS = ("classification", "detection", "segmentation", "lanes")


def read_splits(path: str | Path) -> tuple[Any, Any, list[str]]:
    """(train, val, classes) of the dataset at ``path`` (any registered format, auto-detected),
    as its format reads them: the train split is ``train`` or the first, the val split ``val`` or
    the next. A set without a val split that training would hold out from (boxes, masks, lanes,
    image labels) is split as training splits it; ``val`` is None for other undivided sets."""
    from .formats.base import data_yaml_of, find_format

    path = Path(path)
    fmt = find_format(path)
    names = fmt.splits(path)
    train_name = "train" if "train" in names else names[0]
    rest = [n for n in names if n != train_name and n is not None]
    val_name = "val" if "val" in rest else (rest[0] if rest else None)

    def read(split: str | None) -> Any:
        found = fmt.read(path, split=split)
        if fmt.kind == "sequence":  # (sequence, frame) entries: their image files
            from .sequence import load_sequence

            root = path if path.is_dir() else path.parent
            seqs: dict[str, Any] = {}
            files = []
            for name, index in found:
                if name not in seqs:
                    seqs[name] = load_sequence(root / name, name)
                if index in seqs[name].frames:
                    files.append(seqs[name].frames[index])
            return files
        return found

    if val_name is None and fmt.kind in HOLDOUT_KINDS and data_yaml_of(path) is None:
        # Training validates such a set on its seeded holdout: judge leakage across that split.
        from .formats import read_task_split

        train = read_task_split(path, fmt.name, fmt.kind, "train")
        val = read_task_split(path, fmt.name, fmt.kind, "val")
        return train, val, list(train.classes)
    train = read(train_name)
    val = read(val_name) if val_name is not None else None
    classes = list(getattr(train, "classes", None) or [])
    return train, val, classes


# --- Hashes -------------------------------------------------------------------------------------


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m  # orthonormal DCT-II


_DCT = _dct_matrix(HASH_SIZE)
_BITS = np.ones((LOW, LOW), dtype=bool)
_BITS[0, 0] = False  # the DC term is the mean brightness: no shape information


def exact_hash(pixels: np.ndarray) -> str:
    """Content hash of the decoded pixels (and their shape)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(pixels.shape).encode())
    h.update(np.ascontiguousarray(pixels).tobytes())
    return h.hexdigest()


def perceptual_hash(pixels: np.ndarray) -> int:
    """63-bit DCT pHash of an RGB (or grey) uint8 image (module docstring)."""
    image = Image.fromarray(pixels).convert("L")
    # BOX is an area average: what a resize does to an image before it is hashed matters little.
    grey = np.asarray(image.resize((HASH_SIZE, HASH_SIZE), Image.Resampling.BOX), np.float64)
    coeffs = (_DCT @ grey @ _DCT.T)[:LOW, :LOW][_BITS]
    bits = coeffs > np.median(coeffs)
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def colour_thumb(pixels: np.ndarray) -> np.ndarray:
    """The image as a THUMB × THUMB RGB area average (the colour check of a near pair)."""
    image = Image.fromarray(pixels).convert("RGB")
    return np.asarray(image.resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.uint8)


def thumb_rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2)))


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def _near_pairs(hashes: np.ndarray, threshold: int) -> list[tuple[int, int, int]]:
    """(i, j, distance) with i < j for every pair within ``threshold`` bits, in row blocks so
    memory stays at block × N."""
    out: list[tuple[int, int, int]] = []
    n = len(hashes)
    block = 512
    for start in range(0, n, block):
        rows = hashes[start : start + block]
        dist = np.bitwise_count(rows[:, None] ^ hashes[None, :])
        ii, jj = np.nonzero(dist <= threshold)
        for i, j in zip(ii.tolist(), jj.tolist()):
            if start + i < j:
                out.append((start + i, j, int(dist[i, j])))
    return out


# --- The analysis -------------------------------------------------------------------------------


@dataclass
class _Scan:
    """What one pass over the images collects (the figures need the raw values)."""

    splits: dict[str, _Split]
    sizes: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    box_sizes: dict[str, np.ndarray] = field(default_factory=dict)
    box_aspects: dict[str, np.ndarray] = field(default_factory=dict)
    pixel_counts: dict[str, np.ndarray] = field(default_factory=dict)  # per class (+ other)
    # (split, item index) of every decoded image, with its hashes
    where: list[tuple[str, int]] = field(default_factory=list)
    exact: list[str] = field(default_factory=list)
    phash: list[int] = field(default_factory=list)
    thumbs: list[np.ndarray] = field(default_factory=list)  # THUMB × THUMB RGB uint8
    unreadable: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    sampled_from: dict[str, int] = field(default_factory=dict)  # split → its size, if sampled


def _scan(
    train_set: Any, val_set: Any, classes: Sequence[str] | None, limit: int | None = None
) -> _Scan:
    from .formats.masks import read_mask

    splits = {"train": _records_split(train_set, list(classes) if classes else None)}
    if val_set is not None:
        splits["val"] = _records_split(val_set, list(classes) if classes else None)
    scan = _Scan(splits)
    for name, split in splits.items():
        if limit is not None and len(split.items) > limit:
            # A seeded sample, in file order: the report after training must not decode a
            # 100k-image train set; `data check --html` (no limit) reads every image.
            keep = np.sort(np.random.default_rng(0).choice(len(split.items), limit, False))
            scan.sampled_from[name] = len(split.items)
            split.items = [split.items[i] for i in keep]
    for name, split in splits.items():
        sizes, bad = [], []
        n_classes = len(split.classes)
        counts = np.zeros(n_classes + 1, dtype=np.int64)  # the last: pixels of no class
        for k, item in enumerate(split.items):
            try:
                pixels = read_image(item.path)
            except (DataError, OSError) as e:
                bad.append((item.name, str(e)))
                continue
            sizes.append((pixels.shape[1], pixels.shape[0]))
            scan.where.append((name, k))
            scan.exact.append(exact_hash(pixels))
            scan.phash.append(perceptual_hash(pixels))
            scan.thumbs.append(colour_thumb(pixels))
            if item.mask is not None:
                try:
                    mask, _ = read_mask(item.mask)
                except (DataError, OSError) as e:
                    bad.append((item.name, f"mask: {e}"))
                    continue
                found = np.bincount(mask.ravel(), minlength=256)
                ignored = {split.ignore_index, 255}  # not a class, not an error either
                per_class = found[:n_classes].copy()
                per_class[[i for i in ignored if i < n_classes]] = 0
                counts[:n_classes] += per_class
                counts[n_classes] += (
                    found.sum() - per_class.sum() - sum(int(found[i]) for i in ignored)
                )
        scan.sizes[name] = sizes
        scan.unreadable[name] = bad
        if split.kind == "masks":
            scan.pixel_counts[name] = counts
        if split.kind == "boxes":
            boxes = [it.boxes for it in split.items if it.boxes is not None and len(it.boxes)]
            b = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
            w = np.clip(b[:, 2] - b[:, 0], 0, None)
            h = np.clip(b[:, 3] - b[:, 1], 0, None)
            ok = (w > 0) & (h > 0)
            scan.box_sizes[name] = np.sqrt(w[ok] * h[ok])
            scan.box_aspects[name] = w[ok] / h[ok]
    return scan


def _class_counts(split: _Split, pixel_counts: np.ndarray | None) -> dict[str, int]:
    counts = dict.fromkeys(split.classes, 0)
    for item in split.items:
        if split.kind == "masks":
            continue
        for label in item.labels:
            if 0 <= label < len(split.classes):
                counts[split.classes[label]] += 1
    if split.kind == "masks" and pixel_counts is not None:
        # Images containing each class would need every mask again; pixels are what is read.
        counts = {c: int(pixel_counts[i]) for i, c in enumerate(split.classes)}
    return counts


def _imbalance(counts: dict[str, int]) -> float | None:
    values = list(counts.values())
    if not values:
        return None
    lo, hi = min(values), max(values)
    return math.inf if lo == 0 else hi / lo


def _stats(values: np.ndarray) -> dict[str, float] | None:
    if len(values) == 0:
        return None
    q = np.percentile(values, [0, 5, 50, 95, 100])
    return dict(zip(("min", "p5", "median", "p95", "max"), (float(v) for v in q)))


def _ref(scan: _Scan, index: int) -> dict[str, str]:
    split, k = scan.where[index]
    item = scan.splits[split].items[k]
    return {"split": split, "file": item.name, "path": str(item.path)}


def _analyse(scan: _Scan) -> dict:
    out: dict[str, Any] = {"splits": {}, "near_threshold": NEAR_BITS}
    first = next(iter(scan.splits.values()))
    out["kind"] = first.kind
    out["classes"] = list(first.classes)
    unit = {
        "classification": "images",
        "boxes": "objects",
        "lanes": "lanes",
        "masks": "pixels",
        "images": "images",
    }[first.kind]
    out["count_unit"] = unit
    for name, split in scan.splits.items():
        counts = _class_counts(split, scan.pixel_counts.get(name))
        sizes = Counter(scan.sizes[name])
        entry: dict[str, Any] = {
            "images": len(split.items),
            "sampled_from": scan.sampled_from.get(name),
            "unreadable": [{"file": f, "reason": r} for f, r in scan.unreadable[name]],
            "class_counts": counts,
            "imbalance": _imbalance(counts) if split.classes else None,
            "image_sizes": [
                {"width": w, "height": h, "count": c} for (w, h), c in sizes.most_common()
            ],
        }
        if split.kind in ("boxes", "lanes"):
            entry["objects"] = sum(len(it.labels) for it in split.items)
            entry["empty_images"] = sum(1 for it in split.items if not it.labels)
        if name in scan.box_sizes:
            entry["box_size"] = _stats(scan.box_sizes[name])
            entry["box_aspect"] = _stats(scan.box_aspects[name])
        if name in scan.pixel_counts:
            pc = scan.pixel_counts[name]
            labelled = max(1, int(pc[: len(split.classes)].sum()))
            entry["mask_shares"] = {c: float(pc[i]) / labelled for i, c in enumerate(split.classes)}
            entry["unlabelled_pixels"] = int(pc[-1])
        out["splits"][name] = entry

    # Exact duplicates: groups of one content hash.
    groups: dict[str, list[int]] = {}
    for i, h in enumerate(scan.exact):
        groups.setdefault(h, []).append(i)
    exact = [g for g in groups.values() if len(g) > 1]
    exact.sort(key=lambda g: (len({scan.where[i][0] for i in g}) < 2, scan.where[g[0]]))
    out["exact_duplicates"] = [
        {
            "files": [_ref(scan, i) for i in g],
            "across_splits": len({scan.where[i][0] for i in g}) > 1,
        }
        for g in exact[:MAX_LISTED]
    ]
    # Near duplicates: pairs within NEAR_BITS, exact copies left out (they are listed above).
    hashes = np.array(scan.phash, dtype=np.uint64)
    pairs = [
        (i, j, d)
        for i, j, d in _near_pairs(hashes, NEAR_BITS)
        if scan.exact[i] != scan.exact[j]
        and thumb_rms(scan.thumbs[i], scan.thumbs[j]) <= THUMB_RMS
    ]
    pairs.sort(key=lambda p: (scan.where[p[0]][0] == scan.where[p[1]][0], p[2], p[0], p[1]))
    out["near_duplicates"] = [
        {
            "a": _ref(scan, i),
            "b": _ref(scan, j),
            "distance": d,
            "across_splits": scan.where[i][0] != scan.where[j][0],
        }
        for i, j, d in pairs[:MAX_LISTED]
    ]
    cross_exact = sum(1 for g in exact if len({scan.where[i][0] for i in g}) > 1)
    cross_near = sum(1 for i, j, _ in pairs if scan.where[i][0] != scan.where[j][0])
    out["counts"] = {
        "exact_groups": len(exact),
        "exact_groups_across_splits": cross_exact,
        "near_pairs": len(pairs),
        "near_pairs_across_splits": cross_near,
    }
    return out


def dataset_health(train_set: Any, val_set: Any, classes: Sequence[str] | None) -> dict:
    """Class counts, imbalance, box/mask/image-size statistics and exact and near duplicates
    (within each split and across train/val) of two splits (module docstring). ``val_set`` may
    be None; ``classes`` None takes the datasets' own."""
    return _analyse(_scan(train_set, val_set, classes))


# --- The page -----------------------------------------------------------------------------------


def _save(fig: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight"))


def _figures(scan: _Scan, health: dict, out_dir: Path) -> dict[str, str]:
    """The report's figures as PNG files in ``out_dir``; {section: file name}."""
    from matplotlib.figure import Figure

    names: dict[str, str] = {}
    splits = list(health["splits"])
    classes = health["classes"]
    if classes:
        fig = Figure(figsize=(max(5, 0.5 * len(classes) + 2), 3.2))
        ax = fig.subplots()
        width = 0.8 / len(splits)
        x = np.arange(len(classes))
        for k, name in enumerate(splits):
            counts = health["splits"][name]["class_counts"]
            ax.bar(x + k * width, [counts[c] for c in classes], width, label=name)
        ax.set_xticks(x + width * (len(splits) - 1) / 2, classes, rotation=45, ha="right")
        ax.set_ylabel(health["count_unit"])
        ax.legend(fontsize=8)
        ax.set_title("class counts", fontsize=10)
        _save(fig, out_dir / "health_classes.png")
        names["classes"] = "health_classes.png"
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    for name in splits:
        sizes = np.array(scan.sizes[name] or [(0, 0)])
        ax.scatter(sizes[:, 0], sizes[:, 1], s=8, alpha=0.5, label=name)
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title("image sizes", fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, out_dir / "health_image_sizes.png")
    names["image_sizes"] = "health_image_sizes.png"
    if scan.box_sizes and any(len(v) for v in scan.box_sizes.values()):
        fig = Figure(figsize=(9, 3.2))
        ax1, ax2 = fig.subplots(1, 2)
        every = np.concatenate(list(scan.box_sizes.values()))
        bins = np.geomspace(max(every.min(), 1e-1), max(every.max(), 1.0) * 1.01, 30)
        aspects = np.concatenate(list(scan.box_aspects.values()))
        abins = np.geomspace(aspects.min(), aspects.max() * 1.01 + 1e-6, 30)
        for name in splits:
            ax1.hist(scan.box_sizes.get(name, []), bins=bins, alpha=0.6, label=name)
            ax2.hist(scan.box_aspects.get(name, []), bins=abins, alpha=0.6, label=name)
        ax1.set_xscale("log")
        ax1.set_xlabel("box size √(w·h) (px)")
        ax2.set_xscale("log")
        ax2.set_xlabel("aspect ratio w / h")
        for ax in (ax1, ax2):
            ax.set_ylabel("boxes")
            ax.legend(fontsize=8)
        _save(fig, out_dir / "health_boxes.png")
        names["boxes"] = "health_boxes.png"
    if scan.pixel_counts:
        fig = Figure(figsize=(max(5, 0.5 * len(classes) + 2), 3.2))
        ax = fig.subplots()
        width = 0.8 / len(splits)
        x = np.arange(len(classes))
        for k, name in enumerate(splits):
            shares = health["splits"][name].get("mask_shares", {})
            ax.bar(x + k * width, [100 * shares.get(c, 0.0) for c in classes], width, label=name)
        ax.set_xticks(x + width * (len(splits) - 1) / 2, classes, rotation=45, ha="right")
        ax.set_ylabel("% of labelled pixels")
        ax.legend(fontsize=8)
        _save(fig, out_dir / "health_masks.png")
        names["masks"] = "health_masks.png"
    return names


def _thumb(path: str) -> Image.Image | None:
    try:
        image = Image.fromarray(read_image(path))
    except (DataError, OSError):
        return None
    scale = THUMB_PX / max(1, image.height)
    return image.resize((max(1, round(image.width * scale)), THUMB_PX), Image.Resampling.BILINEAR)


def _pair_images(health: dict, out_dir: Path) -> list[tuple[str, list[dict], str]]:
    """Side-by-side thumbnails of the first duplicates (leaks first): (png, files, label)."""
    entries = [(e["files"], "exact") for e in health["exact_duplicates"]]
    entries += [
        ([e["a"], e["b"]], f"near, {e['distance']} bits") for e in health["near_duplicates"]
    ]
    entries.sort(key=lambda e: len({f["split"] for f in e[0]}) < 2)
    out = []
    for n, (files, label) in enumerate(entries[:MAX_THUMBS]):
        thumbs = [t for t in (_thumb(f["path"]) for f in files[:4]) if t is not None]
        if not thumbs:
            continue
        canvas = Image.new(
            "RGB", (sum(t.width for t in thumbs) + 4 * (len(thumbs) - 1), THUMB_PX), "white"
        )
        x = 0
        for t in thumbs:
            canvas.paste(t, (x, 0))
            x += t.width + 4
        name = f"health_pair_{n:03d}.png"
        atomic_write(out_dir / name, lambda tmp, c=canvas: c.save(tmp, format="PNG"))
        out.append((name, files, label))
    return out


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}
.leak{background:#fde2e2}.ok{color:#2a7a2a}.warn{color:#b00020;font-weight:bold}
img{max-width:100%}.pair{margin:10px 0}.muted{color:#777}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _link(ref: dict, out_dir: Path) -> str:
    """The file as listed, its full path on hover. Not a link: the page may be copied or moved
    (a run report is written in a temporary folder first) and a relative link to the dataset
    would break; the first duplicates are shown as images beside the page instead."""
    return f'<span title="{_e(ref["path"])}">[{_e(ref["split"])}] {_e(ref["file"])}</span>'


def _fmt_ratio(value: float | None) -> str:
    if value is None:
        return "–"
    return "∞ (a class has none)" if math.isinf(value) else f"{value:.2f}"


def _page(health: dict, figures: dict[str, str], pairs: list, out_dir: Path, title: str) -> str:
    h = health
    splits = list(h["splits"])
    c = h["counts"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
    ]
    leaks = c["exact_groups_across_splits"] + c["near_pairs_across_splits"]
    verdict = (
        f'<p class="warn">Leakage: {c["exact_groups_across_splits"]} exact and '
        f"{c['near_pairs_across_splits']} near duplicate(s) cross train/val.</p>"
        if leaks
        else '<p class="ok">No duplicate crosses train/val.</p>'
        if len(splits) > 1
        else ""
    )
    parts.append(verdict)
    parts.append(
        "<h2>Splits</h2><table><tr><th class=l>split</th><th>images</th>"
        "<th>unreadable</th><th>objects</th><th>imbalance (max/min)</th></tr>"
    )
    for name in splits:
        s = h["splits"][name]
        of = f" (a seeded sample of {s['sampled_from']})" if s.get("sampled_from") else ""
        parts.append(
            f"<tr><td class=l>{_e(name)}</td><td>{s['images']}{of}</td>"
            f"<td>{len(s['unreadable'])}</td><td>{s.get('objects', '–')}</td>"
            f"<td>{_fmt_ratio(s['imbalance'])}</td></tr>"
        )
    parts.append("</table>")
    for name in splits:
        for bad in h["splits"][name]["unreadable"]:
            parts.append(
                f"<div class=warn>[{_e(name)}] {_e(bad['file'])}: {_e(bad['reason'])}</div>"
            )
    if h["classes"]:
        parts.append(
            f"<h2>Class counts ({_e(h['count_unit'])})</h2><table><tr><th class=l>class</th>"
        )
        parts += [f"<th>{_e(n)}</th><th>{_e(n)} %</th>" for n in splits]
        parts.append("</tr>")
        for cls in h["classes"]:
            row = [f"<tr><td class=l>{_e(cls)}</td>"]
            for name in splits:
                counts = h["splits"][name]["class_counts"]
                total = max(1, sum(counts.values()))
                row.append(f"<td>{counts[cls]}</td><td>{100 * counts[cls] / total:.1f}</td>")
            parts.append("".join(row) + "</tr>")
        parts.append("</table>")
        if "classes" in figures:
            parts.append(f'<img src="{figures["classes"]}" alt="class counts">')
    if "masks" in figures:
        parts.append("<h2>Mask pixel shares</h2><table><tr><th class=l>class</th>")
        parts += [f"<th>{_e(n)} %</th>" for n in splits]
        parts.append("</tr>")
        for cls in h["classes"]:
            cells = "".join(
                f"<td>{100 * h['splits'][n].get('mask_shares', {}).get(cls, 0.0):.2f}</td>"
                for n in splits
            )
            parts.append(f"<tr><td class=l>{_e(cls)}</td>{cells}</tr>")
        parts.append("</table>")
        unlabelled = ", ".join(f"{n}: {h['splits'][n].get('unlabelled_pixels', 0)}" for n in splits)
        parts.append(
            f"<p class=muted>Pixels of no class (outside the class ids, ignore index "
            f"excluded): {_e(unlabelled)}</p>"
        )
        parts.append(f'<img src="{figures["masks"]}" alt="mask pixel shares">')
    if "boxes" in figures:
        parts.append(
            "<h2>Boxes</h2><table><tr><th class=l>split</th><th class=l>measure</th>"
            "<th>min</th><th>p5</th><th>median</th><th>p95</th><th>max</th></tr>"
        )
        for name in splits:
            for key, label in (("box_size", "size √(w·h) px"), ("box_aspect", "aspect w/h")):
                st = h["splits"][name].get(key)
                if st:
                    cells = "".join(
                        f"<td>{st[k]:.2f}</td>" for k in ("min", "p5", "median", "p95", "max")
                    )
                    parts.append(
                        f"<tr><td class=l>{_e(name)}</td><td class=l>{label}</td>{cells}</tr>"
                    )
        parts.append("</table>")
        parts.append(f'<img src="{figures["boxes"]}" alt="box sizes and aspect ratios">')
    parts.append(
        "<h2>Image sizes</h2><table><tr><th class=l>split</th><th>width × height</th>"
        "<th>images</th></tr>"
    )
    for name in splits:
        listed = h["splits"][name]["image_sizes"]
        for s in listed[:10]:
            parts.append(
                f"<tr><td class=l>{_e(name)}</td><td>{s['width']} × {s['height']}</td>"
                f"<td>{s['count']}</td></tr>"
            )
        if len(listed) > 10:
            parts.append(
                f"<tr><td class=l>{_e(name)}</td><td>{len(listed) - 10} more sizes"
                "</td><td></td></tr>"
            )
    parts.append("</table>")
    parts.append(f'<img src="{figures["image_sizes"]}" alt="image sizes">')

    parts.append(
        f"<h2>Exact duplicates ({c['exact_groups']} group(s), "
        f"{c['exact_groups_across_splits']} across train/val)</h2>"
    )
    parts.append("<p class=muted>Same decoded pixels.</p>")
    if h["exact_duplicates"]:
        parts.append("<table><tr><th class=l>files</th></tr>")
        for g in h["exact_duplicates"]:
            cls = ' class="leak"' if g["across_splits"] else ""
            files = "<br>".join(_link(f, out_dir) for f in g["files"])
            parts.append(f"<tr{cls}><td class=l>{files}</td></tr>")
        parts.append("</table>")
    parts.append(
        f"<h2>Near duplicates ({c['near_pairs']} pair(s), "
        f"{c['near_pairs_across_splits']} across train/val)</h2>"
    )
    parts.append(
        f"<p class=muted>Perceptual hash (DCT pHash, 63 bits) within {h['near_threshold']} "
        f"bits and 16×16 colour thumbnails within RMS {THUMB_RMS:g}/255; exact copies are "
        "listed above only.</p>"
    )
    if h["near_duplicates"]:
        parts.append(
            "<table><tr><th class=l>image</th><th class=l>near duplicate</th><th>bits</th></tr>"
        )
        for p in h["near_duplicates"]:
            cls = ' class="leak"' if p["across_splits"] else ""
            parts.append(
                f"<tr{cls}><td class=l>{_link(p['a'], out_dir)}</td>"
                f"<td class=l>{_link(p['b'], out_dir)}</td><td>{p['distance']}</td></tr>"
            )
        parts.append("</table>")
    shown = c["exact_groups"] + c["near_pairs"]
    if shown > MAX_LISTED:
        parts.append(f"<p class=muted>The first {MAX_LISTED} of each are listed.</p>")
    if pairs:
        parts.append("<h2>Duplicates side by side</h2>")
        for png, files, label in pairs:
            names = ", ".join(f"[{f['split']}] {f['file']}" for f in files)
            parts.append(
                f'<div class="pair"><img src="{png}" alt="{_e(names)}"><br>'
                f"<span class=muted>{_e(label)}: {_e(names)}</span></div>"
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_health_report(
    train_set: Any,
    val_set: Any,
    classes: Sequence[str] | None,
    out_dir: Path,
    limit: int | None = None,
) -> Path:
    """``out_dir/health.html`` with its figures (``health_*.png``) beside it; returns the page's
    path. Reads and decodes every image once (see :func:`dataset_health`), or a seeded sample
    of ``limit`` per split (said on the page)."""
    return health_report(train_set, val_set, classes, out_dir, limit)[0]


def health_report(
    train_set: Any,
    val_set: Any,
    classes: Sequence[str] | None,
    out_dir: Path,
    limit: int | None = None,
) -> tuple[Path, dict]:
    """:func:`write_health_report` and the :func:`dataset_health` dict it shows, from one pass
    over the images."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scan = _scan(train_set, val_set, classes, limit)
    health = _analyse(scan)
    figures = _figures(scan, health, out_dir)
    pairs = _pair_images(health, out_dir)
    page = _page(health, figures, pairs, out_dir, "Dataset health")
    path = out_dir / "health.html"
    atomic_write(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return path, health


def format_health(health: dict) -> str:
    """A few lines for the terminal: sizes, imbalance and duplicates."""
    c = health["counts"]
    lines = []
    for name, s in health["splits"].items():
        lines.append(
            f"{name}: {s['images']} images, class imbalance {_fmt_ratio(s['imbalance'])}"
            + (f", {len(s['unreadable'])} unreadable" if s["unreadable"] else "")
        )
    lines.append(
        f"exact duplicates: {c['exact_groups']} group(s), {c['exact_groups_across_splits']} "
        f"across train/val; near duplicates (pHash <= {health['near_threshold']} bits): "
        f"{c['near_pairs']} pair(s), {c['near_pairs_across_splits']} across train/val"
    )
    for g in health["exact_duplicates"]:
        if g["across_splits"]:
            lines.append(
                "  leak (exact): " + "  ".join(f"[{f['split']}] {f['file']}" for f in g["files"])
            )
    for p in health["near_duplicates"]:
        if p["across_splits"]:
            lines.append(
                f"  leak (near, {p['distance']} bits): [{p['a']['split']}] "
                f"{p['a']['file']}  [{p['b']['split']}] {p['b']['file']}"
            )
    return "\n".join(lines)
