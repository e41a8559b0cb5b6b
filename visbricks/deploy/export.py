"""``visbricks export``: trained weights to ONNX or a torch.export program, checked against eager.

What is exported is the network (backbone → neck → head): images in, the same raw outputs the
task's ``postprocess`` takes (class logits, box deltas, disparities) out, as a tuple in the order
of ``output_names``. Decoding and NMS stay outside the graph (``batched_nms`` does not export
with the dynamo exporter). The batch dimension is dynamic. A file is written only after its
outputs matched eager PyTorch on a batch of a different size from the export example; the JSON
next to it holds what a consumer needs to prepare inputs: size, normalisation, class names.

The PyTorch-native format is ``torch.export``'s ``.pt2`` (``torch.export.load(path).module()``):
TorchScript is deprecated in this torch (``torch.jit.trace`` warns so) and its tracer rejects
outputs that do not depend on the input, such as the detector's anchors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import VisbricksError, WeightsError
from ..files import atomic_write
from .loading import LoadedRun


class ExportError(VisbricksError):
    pass


def _output_name(key: object) -> str:
    """("disp", 0) → "disp_0"; plain strings stay."""
    if isinstance(key, tuple):
        return "_".join(str(k) for k in key)
    return str(key)


class TensorOutputs(nn.Module):
    """The model with its dict output flattened into a tuple in a fixed key order."""

    def __init__(self, model: nn.Module, keys: list) -> None:
        super().__init__()
        self.model = model
        self.keys = keys

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images)
        if isinstance(out, torch.Tensor):
            return (out,)
        return tuple(out[k] for k in self.keys)


@dataclass
class ExportReport:
    path: Path
    format: str
    output_names: list[str]
    max_abs_diff: dict[str, float]
    checked_batch: int

    def __str__(self) -> str:
        worst = max(self.max_abs_diff.values())
        return (
            f"exported {self.format} to {self.path} ({self.path.stat().st_size / 2**20:.1f} MB); "
            f"outputs {', '.join(self.output_names)}; checked against eager PyTorch on a batch "
            f"of {self.checked_batch}: max |difference| {worst:.2e}"
        )


def compare_outputs(
    names: list[str], reference: list, candidate: list, atol: float, rtol: float
) -> dict[str, float]:
    """Max absolute difference per output; ExportError naming the first one out of tolerance."""
    diffs = {}
    for name, ref, got in zip(names, reference, candidate, strict=True):
        ref = torch.as_tensor(ref, dtype=torch.float32)
        got = torch.as_tensor(got, dtype=torch.float32)
        if ref.shape != got.shape:
            raise ExportError(
                f"output {name}: exported shape {tuple(got.shape)} != eager {tuple(ref.shape)}"
            )
        diff = (ref - got).abs()
        diffs[name] = float(diff.max()) if diff.numel() else 0.0
        bound = atol + rtol * ref.abs()
        if not bool((diff <= bound).all()):
            raise ExportError(
                f"output {name} differs from eager PyTorch by up to {diffs[name]:.3g} "
                f"(tolerance {atol} + {rtol}·|value|); the file was not written"
            )
    return diffs


def wrap_outputs(run: LoadedRun) -> tuple[TensorOutputs, list, list[str], torch.Tensor]:
    """(tuple-output wrapper, output keys, output names, example batch) of a run's network."""
    model = run.model.cpu().eval()
    height, width = run.task.img_size
    channels = run.cfg.model.in_channels
    # Batch 2 for the trace: a batch of 1 would be specialised as a constant.
    example = torch.randn(2, channels, height, width)
    with torch.no_grad():
        sample = model(example)
    keys = sorted(sample, key=str) if isinstance(sample, dict) else [None]
    names = [_output_name(k) for k in keys] if keys != [None] else ["output"]
    return TensorOutputs(model, keys).eval(), keys, names, example


def export(
    run: LoadedRun,
    out: str | Path,
    fmt: str = "onnx",
    atol: float = 1e-4,
    rtol: float = 1e-3,
    check_batch: int = 3,
) -> ExportReport:
    """Export ``run``'s network to ``out`` (``onnx`` or ``pt2``) and verify it."""
    if fmt not in ("onnx", "pt2"):
        raise ExportError(f"export format must be 'onnx' or 'pt2', got {fmt!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    wrapper, keys, names, example = wrap_outputs(run)
    channels, height, width = example.shape[1:]

    diffs: dict[str, float] = {}

    def write(tmp_name: str) -> None:
        tmp = Path(tmp_name)  # ends in out's suffix: the loaders go by it
        try:
            if fmt == "onnx":
                _export_onnx(wrapper, example, tmp, names)
            else:
                batch = torch.export.Dim("batch")
                program = torch.export.export(
                    wrapper, (example,), dynamic_shapes={"images": {0: batch}}
                )
                torch.export.save(program, str(tmp))
        except ExportError:
            raise
        except Exception as e:  # the exporters fail deep inside torch; say what and where
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(
                f"{run.cfg.model.backbone} ({run.cfg.task}) could not be exported to {fmt}: {first}"
            ) from e
        check = torch.randn(check_batch, channels, height, width)
        with torch.no_grad():
            reference = [t.numpy() for t in wrapper(check)]
        candidate = _run_exported(tmp, fmt, check)
        # Verified before it is renamed into place: a failed check leaves no file at out.
        diffs.update(compare_outputs(names, reference, candidate, atol, rtol))

    atomic_write(out, write, suffix=out.suffix)
    write_sidecar(run, out, fmt, keys, names, (height, width), channels)
    return ExportReport(out, fmt, names, diffs, check_batch)


def _export_onnx(wrapper: nn.Module, example: torch.Tensor, path: Path, names: list[str]) -> None:
    try:
        import onnx  # noqa: F401  (the exporter needs it; say so before it fails deep inside)
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ExportError("ONNX export needs: pip install 'visbricks[deploy]'") from e
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        wrapper,
        (example,),
        dynamo=True,
        input_names=["images"],
        output_names=names,
        dynamic_shapes={"images": {0: batch}},
        verbose=False,
    )
    # One self-contained file: the weights inside, not in a side file that is easily lost.
    program.save(str(path), external_data=False)


def _run_exported(path: Path, fmt: str, images: torch.Tensor) -> list:
    if fmt == "pt2":
        loaded = torch.export.load(str(path)).module()
        with torch.no_grad():
            return [t.numpy() for t in loaded(images)]
    try:
        import onnxruntime
    except ImportError as e:
        raise ExportError("checking an ONNX export needs: pip install onnxruntime") from e
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images.numpy()})


def _json_key(key: object) -> object:
    return list(key) if isinstance(key, tuple) else key


def preprocess_info(run: LoadedRun) -> dict:
    """How an RGB uint8 image becomes the input tensor, in words and numbers."""
    cfg, task = run.cfg, run.task
    steps: dict = {"image": "RGB uint8 HWC → float CHW / 255, then (x - mean) / std"}
    if hasattr(task, "to_original"):  # box tasks: letterbox, boxes mapped back to the image
        steps.update(
            resize="letterbox: scale = min(H / h, W / w), resized image centred on a canvas "
            "of the input size filled with 114, then padded bottom/right to a multiple of 32",
            fill=114,
            pad_to_stride=32,
            inverse="image_xy = (canvas_xy - (pad_x, pad_y)) / scale, clipped to the image",
        )
    elif cfg.task in ("classify", "multilabel"):
        ratio = cfg.data.aug.crop_ratio
        steps.update(
            resize=f"short side (or both sides when not square) to input / {ratio} "
            "(bilinear, antialiased), then centre crop to the input size",
            crop_ratio=ratio,
        )
    else:
        steps.update(resize="bilinear resize to the input size")
    return steps


def decode_info(run: LoadedRun) -> dict:
    """What the outputs mean, enough to decode them without our source."""
    cfg, task = run.cfg, run.task
    if cfg.task == "detect":
        head = run.model.head
        gen = head.anchor_generator
        return {
            "kind": "ssd",
            "cls_logits": "(batch, A, C + 1): column 0 is background, class c is column c + 1",
            "background_column": 0,
            "scores": "sigmoid of columns 1..C (focal)"
            if task.focal
            else "softmax over all C + 1 columns, then drop column 0",
            "box_deltas": "(batch, A, 4) SSD deltas (dx, dy, dw, dh) / variances",
            "decode": "cx = acx + dx*vx*aw, cy = acy + dy*vy*ah, w = aw*exp(min(dw*vw, clip)), "
            "h = ah*exp(min(dh*vh, clip)) → XYXY input pixels",
            "variances": list(task.box_coder.variances),
            "clip": task.box_coder.clip,
            "anchors": {
                "output": "anchors (A, 4) XYXY input pixels, the same for every image",
                "order": "level, then y, then x, then k (sizes × aspect ratios)",
                "sizes": gen.sizes,
                "aspect_ratios": gen.aspect_ratios,
                "strides": head.strides,
                "clip": gen.clip,
            },
            "nms": {
                "per_class_iou": cfg.eval.nms_thresh,
                "score_thresh": cfg.eval.conf_thresh,
                "topk_candidates": cfg.eval.topk_candidates,
                "max_detections": cfg.eval.max_detections,
            },
        }
    if cfg.task == "locate":
        return {
            "kind": "locate",
            "boxes": "(batch, 4) XYXY input-canvas pixels (undo the letterbox)",
            "logits": "(batch, C) softmax over the classes",
        }
    if cfg.task == "multilabel":
        return {
            "kind": "multilabel",
            "logits": "(batch, C) sigmoid per class",
            "threshold": cfg.eval.threshold,
        }
    if cfg.task == "classify":
        return {"kind": "classify", "logits": "(batch, C) softmax over the classes"}
    if cfg.task == "depth":
        m = cfg.model
        return {
            "kind": "depth",
            "disp": "sigmoid disparity s; depth = 1 / (1/max + (1/min - 1/max) * s)",
            "min_depth": m.get("min_depth"),
            "max_depth": m.get("max_depth"),
        }
    if hasattr(task, "decode_info"):  # tasks that describe their own outputs (lanes)
        return task.decode_info()
    return {"kind": cfg.task}


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def read_sidecar(path: str | Path) -> dict:
    meta = sidecar_path(path)
    if not meta.is_file():
        raise WeightsError(
            f"{path} has no {meta.name} beside it: it holds the config, classes and output names "
            f"needed to prepare inputs and decode outputs (export/quantize write it)"
        )
    info = json.loads(meta.read_text())
    for key in ("config", "classes", "output_keys"):
        if key not in info:
            raise WeightsError(f"{meta}: missing {key!r} (re-export the model with this version)")
    return info


def write_sidecar(
    run: LoadedRun,
    out: Path,
    fmt: str,
    keys: list,
    names: list[str],
    size: tuple[int, int],
    channels: int,
    extra: dict | None = None,
) -> None:
    """The JSON beside an exported file: everything needed to feed it and decode its outputs,
    and the resolved config our tools rebuild the task from."""
    model = getattr(run.model, "model", run.model)  # an eager run's network
    info = {
        "format": fmt,
        "task": run.cfg.task,
        "input": {
            "name": "images",
            "shape": ["batch", channels, size[0], size[1]],
            "dtype": "float32",
            "layout": "NCHW, RGB, 0..1 then (x - mean) / std",
            "mean": list(run.task.mean),
            "std": list(run.task.std),
        },
        "preprocess": preprocess_info(run),
        "outputs": names,
        "output_keys": [_json_key(k) for k in keys],
        "decode": decode_info(run),
        "classes": list(run.classes),
        "params": sum(p.numel() for p in model.parameters()),
        "weights": str(run.weights),
        "config": run.cfg.to_dict(),
        **(extra or {}),
    }
    out.with_suffix(".json").write_text(json.dumps(info, indent=1, default=str))


def existing_export(run: LoadedRun) -> Path | None:
    """``<weights>.onnx`` when ``export`` wrote it from these very weights (and after them)."""
    path = run.weights.with_suffix(".onnx")
    meta = path.with_suffix(".json")
    if not (path.is_file() and meta.is_file()):
        return None
    try:
        same = read_sidecar(path).get("weights") == str(run.weights)
    except Exception:
        return None
    fresh = path.stat().st_mtime >= run.weights.stat().st_mtime
    return path if same and fresh else None
