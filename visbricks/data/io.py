"""Image I/O and dataset-root path safety. Decoded images are RGB uint8 HWC numpy arrays."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def is_image_file(path: str | Path) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def read_image(path: str | Path) -> np.ndarray:
    """Decode ``path`` to an RGB uint8 array of shape (H, W, 3); DataError names the file."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))  # a writable copy: torch.from_numpy needs one
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot decode image {path}: {e}") from None


def check_image(path: str | Path) -> str | None:
    """Return None when ``path`` decodes fully, else the reason it does not."""
    try:
        with Image.open(path) as im:
            im.load()
        return None
    except FileNotFoundError:
        return "file not found"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return f"cannot decode: {e}"


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the header, without decoding pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot read image size of {path}: {e}") from None


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
