"""``visbricks predict``: images, folders, globs or a video in; annotated output and one JSON."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.formats.masks import write_mask
from ..data.io import is_image_file, read_image, write_image
from ..errors import DataError
from .loading import LoadedRun
from .video import VideoWriter, is_video_file, read_frames, video_fps


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


def _predict_images(run: LoadedRun, model: torch.nn.Module, images: list, device) -> list[dict]:
    """The task's predictions for RGB uint8 images, batched where their tensors agree in size."""
    prepared = [run.task.preprocess(im) for im in images]
    tensors = [t for t, _ in prepared]
    if len({tuple(t.shape) for t in tensors}) == 1:
        outputs = run.task.infer(model, torch.stack(tensors).to(device))
        return run.task.postprocess(outputs, [m for _, m in prepared])
    preds = []  # letterboxed sizes may differ: run those one by one
    for t, m in prepared:
        preds += run.task.postprocess(run.task.infer(model, t[None].to(device)), [m])
    return preds


def _public(pred: dict) -> dict:
    # "_"-prefixed entries (e.g. a depth map) are for annotate(), not for the JSON.
    return {k: v for k, v in pred.items() if k[:1] != "_"}


@torch.no_grad()
def predict(
    run: LoadedRun,
    source: str | Path,
    out_dir: str | Path,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> Path:
    """Write annotated outputs and ``<out>/predictions.json``.

    Images (a file, folder or glob) give ``<out>/<image stem>.png``; a task with a per-pixel
    class map (``segment``) also writes it, at the image's own size, as
    ``<out>/masks/<image stem>.png`` (class index per pixel: 8-bit greyscale, 16-bit beyond 256
    classes), named in the image's JSON entry as ``"mask"``. A video gives
    ``<out>/<video stem>.mp4`` with every frame annotated, at the input's frame rate, and one
    JSON entry per frame (no class-map PNGs).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = run.model.to(device).eval()
    if is_video_file(source) and not glob.has_magic(str(source)):
        results = _predict_video(run, model, Path(source), out_dir, batch_size, device)
    else:
        results = _predict_files(run, model, expand_source(source), out_dir, batch_size, device)
    with open(out_dir / "predictions.json", "w") as f:
        json.dump(results, f, indent=1)
    return out_dir


def _predict_files(run, model, files: list[Path], out_dir: Path, batch_size: int, device):
    results = []
    names: set[str] = set()
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        images = [read_image(f) for f in chunk]
        preds = _predict_images(run, model, images, device)
        for file, image, pred in zip(chunk, images, preds):
            # Outputs are PNGs named by stem: a.jpg and a.png, or x.jpg in two folders, would
            # write the same file, so a taken name gets the extension, then a number.
            name = f"{file.stem}.png"
            n = 2
            while name in names:
                name = f"{file.stem}_{file.suffix.lstrip('.')}.png"
                if name in names:
                    name = f"{file.stem}-{n}.png"
                    n += 1
            names.add(name)
            write_image(out_dir / name, run.task.annotate(image, pred))
            entry = {"file": str(file), **_public(pred)}
            index = run.task.index_map(pred)
            if index is not None:
                folder, classes = index
                write_index_png(out_dir / folder / name, classes)
                entry["mask"] = f"{folder}/{name}"
            results.append(entry)
    return results


def write_index_png(path: Path, classes: np.ndarray) -> None:
    """A class map as a lossless PNG whose pixel values are the class ids: 8-bit greyscale
    ('L') for a uint8 map (a model of at most 256 classes: every image of a run alike), else
    16-bit ('I;16')."""
    classes = np.asarray(classes)
    if classes.dtype == np.uint8:
        write_mask(path, classes)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(classes.astype(np.uint16)).save(path)


def _predict_video(run, model, source: Path, out_dir: Path, batch_size: int, device):
    results = []
    frames: list = []

    def flush(writer: VideoWriter) -> None:
        for image, pred in zip(frames, _predict_images(run, model, frames, device)):
            writer.write(run.task.annotate(image, pred))
            results.append({"file": str(source), "frame": len(results), **_public(pred)})
        frames.clear()

    with VideoWriter(out_dir / f"{source.stem}.mp4", video_fps(source)) as writer:
        for frame in read_frames(source):
            frames.append(frame)
            if len(frames) == batch_size:
                flush(writer)
        if frames:
            flush(writer)
    if not results:
        raise DataError(f"{source} has no readable frames")
    return results
