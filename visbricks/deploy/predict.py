"""``visbricks predict``: images, folders or globs in; annotated images and one JSON out."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import torch

from ..data.io import is_image_file, read_image, write_image
from ..errors import DataError
from .loading import LoadedRun


def expand_source(source: str | Path) -> list[Path]:
    """An image, a folder (recursively) or a glob pattern → sorted image paths."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if is_image_file(p))
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(str(source), recursive=True) if is_image_file(p))
    if not files:
        raise DataError(f"no images found at {source}")
    return files


@torch.no_grad()
def predict(run: LoadedRun, source: str | Path, out_dir: str | Path, batch_size: int = 16,
            device: str | torch.device = "cpu") -> Path:
    """Write ``<out>/<image name>`` annotated images and ``<out>/predictions.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = expand_source(source)
    results = []
    model = run.model.to(device).eval()
    names: set[str] = set()
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        images = [read_image(f) for f in chunk]
        prepared = [run.task.preprocess(im) for im in images]
        tensors = [t for t, _ in prepared]
        if len({tuple(t.shape) for t in tensors}) == 1:
            outputs = model(torch.stack(tensors).to(device))
            preds = run.task.postprocess(outputs, [m for _, m in prepared])
        else:  # letterboxed sizes may differ: run those one by one
            preds = []
            for t, m in prepared:
                preds += run.task.postprocess(model(t[None].to(device)), [m])
        for file, image, pred in zip(chunk, images, preds):
            name = file.name
            n = 2
            while name in names:  # same file name in two folders: keep both
                name = f"{file.stem}-{n}{file.suffix}"
                n += 1
            names.add(name)
            write_image(out_dir / (Path(name).stem + ".png"), run.task.annotate(image, pred))
            # "_"-prefixed entries (e.g. a depth map) are for annotate(), not for the JSON.
            results.append({"file": str(file), **{k: v for k, v in pred.items() if k[:1] != "_"}})
    with open(out_dir / "predictions.json", "w") as f:
        json.dump(results, f, indent=1)
    return out_dir
