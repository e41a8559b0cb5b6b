"""Image I/O and dataset-root path safety. Decoded images are RGB uint8 HWC numpy arrays."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def is_image_file(path: str | Path) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


# Images with more pixels than this are refused before decoding (decompression bombs: a few KB
# of PNG that inflate to gigabytes). data.max_pixels sets it (set_max_pixels); None: no limit.
MAX_PIXELS: int | None = 178_956_970  # Pillow's own hard limit (2 x Image.MAX_IMAGE_PIXELS)
# Pillow's checks are ours now: it would warn (or raise its own error) on the same images.
Image.MAX_IMAGE_PIXELS = None

_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)


def set_max_pixels(limit: int | None) -> None:
    """The pixel limit above which images are refused (``data.max_pixels``)."""
    global MAX_PIXELS
    MAX_PIXELS = limit


def _check_pixels(im: Image.Image, path: str | Path) -> None:
    w, h = im.size
    if MAX_PIXELS is not None and w * h > MAX_PIXELS:
        raise DataError(
            f"image {path} is {w}x{h} = {w * h} pixels, over the limit of {MAX_PIXELS} "
            "(a decompression bomb, or raise data.max_pixels if the image is genuine)"
        )


def to_rgb8(im: Image.Image) -> np.ndarray:
    """Any Pillow image → RGB uint8 (H, W, 3), scaling deep images instead of clipping them.

    - 16-bit (``I;16*``, and ``I`` whose values exceed 255): value * 255 / 65535, rounded —
      the full 16-bit range maps onto the full 8-bit range (Pillow's own ``convert`` clips
      every value above 255 to white).
    - 32-bit float (``F``): values are taken as 0..1 (the float-image convention), scaled by 255
      and clipped; a float image whose values exceed 1 is scaled by its own maximum instead.
    - palette, grey, CMYK, alpha: Pillow's conversion (alpha dropped, not composited).
    """
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        if im.mode == "I" and a.size and a.max() <= 255 and a.min() >= 0:
            a8 = a.astype(np.uint8)  # 8-bit values stored as 32-bit ints
        else:
            a8 = np.clip(np.rint(a * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return np.repeat(a8[..., None], 3, axis=2)
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        top = a.max() if a.size else 1.0
        scale = 255.0 if top <= 1.0 else 255.0 / top
        a8 = np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
        return np.repeat(a8[..., None], 3, axis=2)
    if im.mode in ("RGB;16", "RGBA;16", "RGB;48"):  # rare raw modes: let Pillow narrow them
        im = im.convert("RGB")
    return np.array(im.convert("RGB"))  # a writable copy: torch.from_numpy needs one


def read_image(path: str | Path) -> np.ndarray:
    """Decode ``path`` to an RGB uint8 array of shape (H, W, 3); DataError names the file.

    The EXIF orientation is applied (a phone's portrait JPEG is stored sideways with a tag
    saying so): pixels come out the way every viewer, and the annotation tool, showed them.
    """
    try:
        with Image.open(path) as im:
            _check_pixels(im, path)
            im = ImageOps.exif_transpose(im)
            return to_rgb8(im)
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"expected an image file, got a folder: {path}") from None
    except Image.DecompressionBombError as e:
        raise DataError(f"image {path} refused as a decompression bomb: {e}") from None
    except _DECODE_ERRORS as e:
        raise DataError(f"cannot decode image {path}: {e}") from None


def check_image(path: str | Path) -> str | None:
    """Return None when ``path`` decodes fully, else the reason it does not."""
    try:
        with Image.open(path) as im:
            _check_pixels(im, path)
            im.load()
        return None
    except FileNotFoundError:
        return "file not found"
    except DataError as e:
        return str(e)
    except Image.DecompressionBombError as e:
        return f"decompression bomb: {e}"
    except _DECODE_ERRORS as e:
        return f"cannot decode: {e}"


def exif_orientation(im: Image.Image) -> int:
    if im.format == "PNG" and "exif" not in im.info:
        # Pillow's PNG getexif() decodes the whole image to look for an eXIf chunk after the
        # pixels (4 ms for a CamVid frame, against 17 us for the header): the spec puts eXIf
        # before IDAT, where the header read has already found it.
        return 1
    try:
        return int(im.getexif().get(0x0112, 1))  # 0x0112: Orientation
    except Exception:  # noqa: BLE001 - a malformed EXIF block is "no orientation", not an error
        return 1


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as decoded (EXIF rotation applied), from the header, without decoding
    pixels."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if exif_orientation(im) in (5, 6, 7, 8):  # the transposing orientations
                w, h = h, w
            return w, h
    except (FileNotFoundError, IsADirectoryError, *_DECODE_ERRORS) as e:
        raise DataError(f"cannot read image size of {path}: {e}") from None


def image_geometry(path: str | Path) -> tuple[int, int, int]:
    """(stored width, stored height, EXIF orientation 1..8) from the header."""
    try:
        with Image.open(path) as im:
            return im.size[0], im.size[1], exif_orientation(im)
    except (FileNotFoundError, IsADirectoryError, *_DECODE_ERRORS) as e:
        raise DataError(f"cannot read image size of {path}: {e}") from None


def exif_transform_boxes(
    boxes: np.ndarray, orientation: int, width: int, height: int
) -> np.ndarray:
    """XYXY boxes drawn on the *stored* pixels (``width`` x ``height``) → the same boxes on the
    image ``read_image`` returns (EXIF orientation applied), so boxes stay with the pixels."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if orientation not in (2, 3, 4, 5, 6, 7, 8) or not len(boxes):
        return boxes.astype(np.float32)
    w, h = float(width), float(height)
    xs, ys = boxes[:, [0, 2]], boxes[:, [1, 3]]
    # Where a stored point (x, y) lands after ImageOps.exif_transpose (continuous coordinates).
    new_x, new_y = {
        2: (w - xs, ys),  # mirrored horizontally
        3: (w - xs, h - ys),  # rotated 180
        4: (xs, h - ys),  # mirrored vertically
        5: (ys, xs),  # transposed
        6: (h - ys, xs),  # stored rotated 90 CCW: shown rotated 90 CW
        7: (h - ys, w - xs),  # transversed
        8: (ys, w - xs),  # stored rotated 90 CW: shown rotated 90 CCW
    }[orientation]
    out = np.stack(
        [new_x.min(1), new_y.min(1), new_x.max(1), new_y.max(1)], axis=1
    )
    return out.astype(np.float32)


def write_image(path: str | Path, image: np.ndarray) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def safe_join(root: str | Path, relative: str | Path) -> Path:
    """Join an annotation-supplied path to the dataset root, refusing anything that escapes it.

    Annotation files are user data; a ``../../etc/passwd`` or absolute path in one must not make
    us read (or later write) outside the dataset.
    """
    root_resolved = Path(root).resolve()
    candidate = (root_resolved / relative).resolve()
    if os.path.commonpath([root_resolved, candidate]) != str(root_resolved):
        raise DataError(f"path {str(relative)!r} escapes the dataset root {root_resolved}; refused")
    return candidate


def warn_skipped(skipped: list[tuple[object, str]], what: str, stacklevel: int = 3) -> None:
    """One warning for the entries a lenient dataset skipped: how many, why (first five) and
    how to make it an error. ``what`` reads like "unreadable image(s) of 120"."""
    if not skipped:
        return
    shown = "; ".join(f"{entry}: {why}" for entry, why in skipped[:5])
    warnings.warn(
        f"skipped {len(skipped)} {what} ({shown}); set data.strict=true to make this an error",
        stacklevel=stacklevel + 1,
    )


def _nbytes(value: Any) -> int:
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    if hasattr(value, "nbytes"):  # numpy arrays and torch tensors
        return int(value.nbytes)
    return 0


class DecodeCache:
    """Decoded images kept in memory up to a byte budget; past it, images are decoded again.

    ``budget``: ``True`` (no bound), ``False``/``0`` (off) or a number of bytes. First come, first
    kept: under a shuffled sampler that hits as often as an LRU and never churns memory. Each
    DataLoader worker holds its own copy of the cache, so inside a worker the budget is divided by
    the number of workers: the process tree as a whole stays within ``budget``.
    """

    def __init__(self, budget: bool | int = True) -> None:
        self.limit: float = float("inf") if budget is True else max(0, int(budget))
        self._items: dict[Hashable, Any] = {}
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._worker_limit: float | None = None

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def __len__(self) -> int:
        return len(self._items)

    def _allowance(self) -> float:
        if self._worker_limit is None:
            from torch.utils.data import get_worker_info

            info = get_worker_info()
            self._worker_limit = self.limit / info.num_workers if info else self.limit
        return self._worker_limit

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """The cached value of ``key``, or ``load()`` (kept when it fits in the budget)."""
        value = self._items.get(key)
        if value is not None:
            self.hits += 1
            return value
        self.misses += 1
        value = load()
        self.put(key, value)
        return value

    def put(self, key: Hashable, value: Any) -> bool:
        if not self.enabled or key in self._items:
            return False
        size = _nbytes(value)
        if self.nbytes + size > self._allowance():
            return False
        self._items[key] = value
        self.nbytes += size
        return True


def cache_budget(enabled: bool, megabytes: float | None) -> bool | int:
    """``data.cache`` + ``data.cache_mb`` → the ``budget`` of :class:`DecodeCache`."""
    if not enabled:
        return False
    return True if megabytes is None else int(megabytes * 2**20)
