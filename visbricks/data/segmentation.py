"""Semantic-segmentation data: a Dataset of (image, class-index mask) and mask-aware augmentation.

Items are ``{"image": float CHW, "semantic": int64 (H, W), "orig_size": (h, w),
"letterbox": (scale, pad_x, pad_y)}`` and, for a dataset built with ``keep_original=True``,
``"semantic_original"``: the untransformed uint8 label map at the image's own size (255 =
ignore), which evaluation at the original resolution scores against;
:func:`~visbricks.data.collate.pad_collate` stacks ``semantic``, padded with the ignore index, and
keeps ``semantic_original`` as a list (the sizes differ). The mask is a ``tv_tensors.Mask`` (our
:class:`~visbricks.data.transforms.SemanticMask`) through every transform, so torchvision v2
moves it with the image and resizes it with nearest-neighbour (never interpolating class ids),
and padding fills it with the ignore index, not background.

Training (mmsegmentation's recipe): random scale (the size that fits ``img_size`` times a factor
from ``scale_jitter``) → random crop of ``img_size`` whose most frequent class covers at most
``cat_max_ratio`` of the labelled pixels (up to 10 tries, as mmseg's ``RandomCrop``) → padding
to ``img_size`` where the scaled image is smaller (mask: ignore) → horizontal flip → photometric
distortion of the image only → normalise. Evaluation letterboxes to ``img_size`` (mask padding:
ignore), so metrics never count padding.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..errors import ConfigError, DataError
from .formats.masks import SegmentationSet, read_mask
from .io import DecodeCache, read_image, safe_join
from .report import ProblemList, first_readable
from .transforms import (
    IGNORE_INDEX,
    Letterbox,
    SemanticMask,
    _normalize_steps,
    _parse_size,
)

Sample = dict[str, Any]

SEG_AUG: dict[str, Any] = {
    "hflip": 0.5,  # probability
    "vflip": 0.0,  # probability (aerial / medical data)
    "scale_jitter": [0.5, 2.0],  # factor on the size that fits img_size; null: no rescaling
    "crop": True,  # random img_size crop (else: the whole rescaled image, letterboxed)
    "cat_max_ratio": 0.75,  # a crop's most frequent class may cover at most this share; 1: off
    "photometric": 0.5,  # probability of each photometric step (image only)
}


def resolve_seg_aug(aug: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults merged with ``aug`` (``data.aug``); ConfigError names a bad key or value."""
    aug = dict(aug or {})
    for key in aug:
        if key not in SEG_AUG:
            close = difflib.get_close_matches(key, SEG_AUG, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"data.aug: unknown key {key!r}{hint} (valid: {', '.join(SEG_AUG)})")
    cfg = {**SEG_AUG, **aug}
    for key in ("hflip", "vflip", "photometric", "cat_max_ratio"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise ConfigError(f"data.aug.{key} must be a number in [0, 1], got {v!r}")
    jitter = cfg["scale_jitter"]
    if jitter is not None:
        ok = (
            isinstance(jitter, (list, tuple))
            and len(jitter) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in jitter)
            and 0 < jitter[0] <= jitter[1]
        )
        if not ok:
            raise ConfigError(
                f"data.aug.scale_jitter must be [low, high] with 0 < low <= high, got {jitter!r}"
            )
        cfg["scale_jitter"] = (float(jitter[0]), float(jitter[1]))
    if not isinstance(cfg["crop"], bool):
        raise ConfigError(f"data.aug.crop must be true or false, got {cfg['crop']!r}")
    return cfg


@F.register_kernel(F.resize, SemanticMask)
def _resize_semantic(
    mask: SemanticMask,
    size: list[int] | None,
    interpolation: Any = None,
    max_size: int | None = None,
    antialias: bool | None = None,
) -> SemanticMask:
    """Class maps are resized by *centre-aligned* nearest neighbour ("nearest-exact").

    v2's own mask kernel uses legacy ``nearest`` (source index ``floor(i / scale)``), which
    shifts a mask by up to half a pixel against the image resized by (antialiased) bilinear
    sampling at pixel centres; repeated resizes add the shifts up. Registered for our
    :class:`SemanticMask` type only: v2 dispatches on the most specific registered type.
    """
    from torchvision.transforms.v2.functional._geometry import _compute_resized_output_size

    height, width = mask.shape[-2:]
    new_h, new_w = _compute_resized_output_size((height, width), size, max_size)
    x = mask.as_subclass(torch.Tensor)
    flat = x.reshape(-1, 1, height, width)
    out = torch.nn.functional.interpolate(flat.float(), size=(new_h, new_w), mode="nearest-exact")
    out = out.round().to(x.dtype).reshape(*x.shape[:-2], new_h, new_w)
    return tv_tensors.wrap(out, like=mask)


class RandomScale(v2.Transform):
    """Resize so the image fits ``size`` (aspect kept), times a random factor in ``scale_range``.

    Masks are resized nearest-neighbour by v2 (``tv_tensors.Mask``)."""

    def __init__(self, size: tuple[int, int], scale_range: tuple[float, float]) -> None:
        super().__init__()
        self.size = _parse_size(size)
        self.scale_range = scale_range

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        lo, hi = self.scale_range
        scale = min(self.size[0] / height, self.size[1] / width)
        scale *= lo + (hi - lo) * float(torch.rand(()))
        return {"new_size": [max(1, round(height * scale)), max(1, round(width * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.resize, inpt, params["new_size"], antialias=True)


class CatMaxRatioCrop(v2.Transform):
    """Random ``size`` crop, padded where the input is smaller (image: ``fill``, mask: ignore).

    Like mmseg's ``RandomCrop(cat_max_ratio=…)``: up to ``tries`` crops are drawn until the most
    frequent labelled class covers at most ``cat_max_ratio`` of the crop's labelled pixels (so
    crops of pure background are rare); the last one is used otherwise.
    """

    def __init__(
        self,
        size: tuple[int, int],
        cat_max_ratio: float = 1.0,
        fill: int = 0,
        ignore_index: int = IGNORE_INDEX,
        tries: int = 10,
    ) -> None:
        super().__init__()
        self.size = _parse_size(size)
        self.cat_max_ratio = float(cat_max_ratio)
        self.ignore_index = ignore_index
        self.tries = tries
        self._fills = {tv_tensors.Image: fill, SemanticMask: ignore_index, tv_tensors.Mask: 0}

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        ch, cw = self.size
        mask = next((x for x in flat_inputs if isinstance(x, SemanticMask)), None)
        top = left = 0
        for _ in range(self.tries if mask is not None and self.cat_max_ratio < 1 else 1):
            top = int(torch.randint(max(height - ch, 0) + 1, ()))
            left = int(torch.randint(max(width - cw, 0) + 1, ()))
            if mask is None or self.cat_max_ratio >= 1:
                break
            window = mask.as_subclass(torch.Tensor)[..., top : top + ch, left : left + cw]
            labels = window[window != self.ignore_index]
            if labels.numel() == 0:
                continue
            counts = torch.bincount(labels.flatten().long())
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                break
        return {"top": top, "left": left, "height": height, "width": width}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        ch, cw = self.size
        out = self._call_kernel(
            F.crop, inpt, top=params["top"], left=params["left"], height=min(ch, params["height"]),
            width=min(cw, params["width"]),
        )  # fmt: skip
        pad_h, pad_w = max(ch - params["height"], 0), max(cw - params["width"], 0)
        if pad_h or pad_w:
            # Bottom/right padding: pixel coordinates stay where they were.
            fill = self._fills.get(type(inpt), 0)
            out = self._call_kernel(F.pad, out, padding=[0, 0, pad_w, pad_h], fill=fill)
        return out


class _Tag(nn.Module):
    def forward(self, sample: Sample) -> Sample:
        if not isinstance(sample["semantic"], SemanticMask):
            sample = {**sample, "semantic": SemanticMask(sample["semantic"])}
        return sample


def build_segmentation_transforms(
    img_size: int | tuple[int, int],
    train: bool,
    aug: Mapping[str, Any] | None = None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    fill: int = 0,
    normalize: bool = True,
) -> v2.Compose:
    """The sample-dict pipeline of the module docstring (``normalize=False``: uint8 out)."""
    size = _parse_size(img_size)
    cfg = resolve_seg_aug(aug)
    steps: list[nn.Module] = [_Tag()]
    if train:
        if cfg["crop"]:
            if cfg["scale_jitter"] is not None:
                steps.append(RandomScale(size, cfg["scale_jitter"]))
            steps.append(CatMaxRatioCrop(size, cfg["cat_max_ratio"], fill=fill))
        else:
            # One resize: the jitter multiplies the letterbox's own fitting scale.
            steps.append(Letterbox(size, fill=fill, scale_range=cfg["scale_jitter"]))
        if cfg["hflip"] > 0:
            steps.append(v2.RandomHorizontalFlip(p=cfg["hflip"]))
        if cfg["vflip"] > 0:
            steps.append(v2.RandomVerticalFlip(p=cfg["vflip"]))
        if cfg["photometric"] > 0 and normalize:
            # v2's photometric transforms act on images only; masks pass through untouched.
            steps.append(v2.RandomPhotometricDistort(p=cfg["photometric"]))
    else:
        steps.append(Letterbox(size, fill=fill))
    if normalize:
        steps.extend(_normalize_steps(mean, std))
    return v2.Compose(steps)


class SegmentationDataset(Dataset):
    """Images and masks of a :class:`SegmentationSet` (records without a mask are left out).

    A sample that cannot be read — unreadable file, or a mask whose size differs from its
    image — is warned about, counted and replaced by the next one (``strict=True`` raises).
    Mask values outside ``0..C-1`` other than the ignore index are mapped to the ignore index
    (``visbricks data check`` lists them, :func:`warn_stray_labels` counts them once), so a
    stray label never reaches the loss. Masks of the wrong size are already dropped, counted,
    by the readers; the check here catches a file changed since.
    ``keep_original``: every item also carries that label map untransformed
    (``semantic_original``), for scoring at the original resolution.
    """

    def __init__(
        self,
        dataset: SegmentationSet,
        transform: Callable[[Sample], Sample] | None = None,
        *,
        strict: bool = False,
        cache: bool | int = False,
        keep_original: bool = False,
    ) -> None:
        self.dataset = dataset
        self.keep_original = keep_original
        self.records = [r for r in dataset.records if r.mask_file is not None]
        self.transform = transform
        self.strict = strict
        self.cache = DecodeCache(cache)
        self.num_skipped = 0
        self.bad_files: dict[str, str] = {}
        self.num_classes = len(dataset.classes)
        self.ignore_index = dataset.ignore_index
        # Class ids → themselves; anything else → the training ignore index (255).
        lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        lut[: min(self.num_classes, 256)] = np.arange(min(self.num_classes, 256))
        lut[dataset.ignore_index] = IGNORE_INDEX  # e.g. CamVid's void = 11
        self._lut = lut

    def __len__(self) -> int:
        return len(self.records)

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The decoded (image RGB uint8 HWC, mask uint8 HW with 255 = ignore) of ``index``."""
        record = self.records[index]

        def read() -> tuple[np.ndarray, np.ndarray]:
            image = read_image(safe_join(self.dataset.root, record.file))
            mask, _ = read_mask(self.dataset.mask_path(record))
            if mask.shape != image.shape[:2]:
                raise DataError(
                    f"mask {record.mask_file} is {mask.shape[1]}×{mask.shape[0]} but its image "
                    f"{record.file} is {image.shape[1]}×{image.shape[0]}"
                )
            return image, self._lut[mask]

        return self.cache.get(index, read)

    def __getitem__(self, index: int) -> Sample:
        image, mask = first_readable(
            self, index, self.records, lambda i, _: self.load(i), self.dataset.root
        )
        return self._finish(image, mask)

    def _finish(self, image: np.ndarray, mask: np.ndarray) -> Sample:
        sample: Sample = {
            "image": tv_tensors.Image(torch.from_numpy(np.array(image.transpose(2, 0, 1)))),
            "semantic": SemanticMask(torch.from_numpy(mask.copy())),
        }
        if self.transform is not None:
            sample = self.transform(sample)
        img = sample["image"]
        if not img.is_floating_point():
            img = F.to_dtype(img, torch.float32, scale=True)
        item = {
            "image": img.as_subclass(torch.Tensor),
            "semantic": sample["semantic"].as_subclass(torch.Tensor).long(),
            "orig_size": tuple(mask.shape),
            "letterbox": tuple(sample.get("letterbox", (1.0, 0, 0))),
        }
        if self.keep_original:
            # uint8, not int64: an original-size map per image is the bulk of a val batch.
            # A copy: the decode cache keeps ``mask``, and a batch must not alias it.
            item["semantic_original"] = torch.from_numpy(mask.copy())
        return item


def check_masks(dataset: SegmentationSet) -> list[tuple[str, str]]:
    """Every problem ``data check`` reports for a mask dataset: (file, reason).

    Images without a mask (from reading), masks whose size differs from the image, and mask
    values outside ``0..C-1`` that are not the ignore index (with the values found).
    """
    return scan_masks(dataset)[0]


def scan_masks(dataset: SegmentationSet) -> tuple[list[tuple[str, str]], np.ndarray]:
    """:func:`check_masks`' problems and, from the same single read of every mask, the pixel
    count of every label value (256 bins: class ids, the ignore index and stray values)."""
    problems = list(dataset.problems)
    counts = np.zeros(256, dtype=np.int64)
    c = len(dataset.classes)
    for r in dataset.records:
        if r.mask_file is None:
            continue  # already among dataset.problems
        try:
            mask, _ = read_mask(dataset.mask_path(r))
        except DataError as e:
            problems.append((r.mask_file, str(e)))
            continue
        if mask.shape != (r.height, r.width):
            problems.append(
                (
                    r.mask_file,
                    f"mask is {mask.shape[1]}×{mask.shape[0]}, image {r.file} is "
                    f"{r.width}×{r.height}",
                )
            )
        found = np.bincount(mask.ravel(), minlength=256)
        counts += found
        bad = [int(v) for v in np.flatnonzero(found) if v >= c and v != dataset.ignore_index]
        if bad:
            problems.append(
                (
                    r.mask_file,
                    f"values {bad[:10]} outside the {c} classes (0..{c - 1}) and not the ignore "
                    f"index {dataset.ignore_index}",
                )
            )
    return problems, counts


def warn_stray_labels(dataset: SegmentationSet, where: str, strict: bool = False) -> None:
    """One warning when masks of ``dataset`` hold label values that are neither a class id nor
    the ignore index: how many masks and pixels, which values, an example file (``strict``: a
    DataError instead). :class:`SegmentationDataset` maps such pixels to the ignore index so they
    never reach the loss; this says so once, before training, instead of silently. Reads every
    mask once; ``where`` starts the message ("the train split of PATH")."""
    c, ignore = len(dataset.classes), dataset.ignore_index
    counts = np.zeros(256, dtype=np.int64)
    images, masks, example = 0, 0, ""
    for r in dataset.records:
        if r.mask_file is None:
            continue
        try:
            mask, _ = read_mask(dataset.mask_path(r))
        except DataError:
            continue  # the sample's own skip names it when it is loaded
        masks += 1
        found = np.bincount(mask.ravel(), minlength=256)
        found[: min(c, 256)] = 0
        found[ignore] = 0
        if found.any():
            images += 1
            counts += found
            example = example or str(r.mask_file)
    if not images:
        return
    values = [int(v) for v in np.flatnonzero(counts)]
    shown = f"{values[:10]}" + (f" and {len(values) - 10} more" if len(values) > 10 else "")
    message = (
        f"{images} of {masks} masks hold label values {shown} ({int(counts.sum())} pixels) "
        f"outside the {c} classes (0..{c - 1}) and not the ignore index {ignore}, e.g. {example}"
    )
    if strict:
        raise DataError(f"{where}: {message} (data.strict=true)")
    warnings.warn(
        f"{where}: {message}; they are ignored in training and metrics (if they are classes, "
        "give data.classes; if they mean unlabelled, data.ignore_index)",
        stacklevel=2,
    )


def class_pixel_counts(dataset: SegmentationDataset, limit: int | None = None) -> np.ndarray:
    """Labelled pixels per class over (up to ``limit`` samples of) a dataset, untransformed."""
    counts = np.zeros(dataset.num_classes, dtype=np.int64)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for i in range(n):
        _, mask = dataset.load(i)
        counts += np.bincount(mask[mask != IGNORE_INDEX].ravel(), minlength=len(counts))[
            : len(counts)
        ]
    return counts


def median_frequency_weights(counts: np.ndarray) -> list[float]:
    """SegNet's median-frequency balancing: weight_c = median(freq) / freq_c (0 for absent)."""
    freq = counts / max(counts.sum(), 1)
    med = float(np.median(freq[freq > 0])) if (freq > 0).any() else 1.0
    return [med / f if f > 0 else 0.0 for f in freq.tolist()]


def stride_ceil(value: int, stride: int) -> int:
    return int(math.ceil(value / stride) * stride)


class MaskCheckReport(ProblemList):
    """What ``visbricks data check`` prints for a mask dataset: per split the images, the images
    without a mask, each class's pixels and share of all mask pixels (the ignore index and
    stray values as rows of their own, so the shares add up to 100 %), and every problem with
    its file. Numbered class names (none were given) are said as such."""

    def __init__(
        self,
        source: Path,
        dataset_format: str,
        classes: list[str],
        ignore_index: int = IGNORE_INDEX,
        numbered: bool = False,
    ) -> None:
        self.source = source
        self.dataset_format = dataset_format
        self.classes = classes
        self.ignore_index = ignore_index
        self.numbered = numbered
        # split -> {"images", "masks", "pixels" (per class), "ignored", "other", "total"}
        self.splits: dict[str, dict[str, Any]] = {}
        self.problems: list[tuple[str, str, str]] = []  # (split, file, reason)

    def shares(self, split: str) -> dict[str, float]:
        """Each class's share of all mask pixels of ``split`` (0..1), by class name."""
        s = self.splits[split]
        total = max(int(s["total"]), 1)
        return {name: int(n) / total for name, n in zip(self.classes, s["pixels"])}

    def format(self) -> str:
        n = len(self.classes)
        lines = [f"{self.source}  ({self.dataset_format}, {n} classes, masks)", ""]
        lines.append(f"{'split':<10}{'images':>8}{'masks':>8}")
        for name, s in self.splits.items():
            lines.append(f"{name:<10}{s['images']:>8}{s['masks']:>8}")
        rows = [*self.classes, f"(ignore {self.ignore_index})"]
        if any(s["other"] for s in self.splits.values()):
            rows.append("(out of range)")
        width = max(len("class"), *(len(c) for c in rows)) + 2
        head = "".join(f"{s + ' pixels':>16}{'share':>9}" for s in self.splits)
        lines += ["", f"{'class':<{width}}" + head]
        for i, row in enumerate(rows):
            cells = []
            for s in self.splits.values():
                if i < n:
                    count = int(s["pixels"][i])
                else:
                    count = int(s["ignored"] if i == n else s["other"])
                cells.append(f"{count:>16}{count / max(int(s['total']), 1):>9.2%}")
            lines.append(f"{row:<{width}}" + "".join(cells))
        if self.numbered:
            lines += [
                "",
                f"classes not named: class_0..class_{n - 1} are the label values found "
                f"({self.ignore_index} ignored); name them with 'classes' in a data YAML or a "
                "classes.txt",
            ]
        lines.append("")
        lines += self.problem_lines()
        return "\n".join(lines)


def check_mask_dataset(
    path: str | Path, strict: bool = False, ignore_index: int | None = None
) -> MaskCheckReport:
    """Read every split of a mask dataset and report (see :func:`check_masks`); ``strict``
    raises a DataError naming the file at the first problem. ``ignore_index`` (e.g. CamVid's
    void = 11) overrides the dataset's or data YAML's own."""
    from .formats import find_format

    path = Path(path)
    fmt = find_format(path, "segmentation")
    report: MaskCheckReport | None = None
    for split in fmt.splits(path):
        name = split or "all"
        # Later splits are checked against the first one's classes: numbered names counted
        # on a val split alone could be fewer, and its stray values would go unnoticed.
        classes = report.classes if report is not None else None
        ds = fmt.read(path, split=split, classes=classes, ignore_index=ignore_index)
        if report is None:
            report = MaskCheckReport(
                path, fmt.name, list(ds.classes), ds.ignore_index, ds.numbered
            )
        problems, counts = scan_masks(ds)
        if strict and problems:
            file, reason = problems[0]
            raise DataError(f"{file}: {reason}")
        report.problems += [(name, f, r) for f, r in problems]
        pixels = counts[: len(ds.classes)].copy()
        ignored = int(counts[ds.ignore_index])
        if ds.ignore_index < len(pixels):
            pixels[ds.ignore_index] = 0  # an ignored class id is never learned: shown as ignore
        report.splits[name] = {
            "images": len(ds.records),
            "masks": sum(r.mask_file is not None for r in ds.records),
            "pixels": pixels,
            "ignored": ignored,
            "other": int(counts.sum()) - int(pixels.sum()) - ignored,
            "total": int(counts.sum()),
        }
    assert report is not None
    return report
